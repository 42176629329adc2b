"""LRS2 (BBC) and LRS3 (TED) -> one manifest per split, audio extracted by ffmpeg. docs/data.md shows the trees.

LRS2 (`import_lrs2`): the root is the folder the download unpacks to (mvlrs_v1/), with the four official lists:

    main/<programme>/<NNNNN>.mp4 .txt       train, val and test clips together; .txt: `Text:` and `Conf:` only
    pretrain/<programme>/<NNNNN>.mp4 .txt   .txt: `Text:`, `Conf:`, then the word table
    train.txt val.txt test.txt              one main/ clip per line, `<programme>/<NNNNN>` first (test.txt lines
    pretrain.txt                            may end in NF or MV); pretrain.txt names pretrain/ clips

Each list becomes its own manifest: the official splits, never mixed. A clip on disk that no list names is skipped
and counted (it never falls into train); a listed clip that is not on disk is skipped and named by its list line;
a clip in two lists is an error naming both lines. The folder above an LRS2 clip is a BBC programme broadcast, not
a person: there, "speaker" (the manifest's speaker, babble's other speakers, any speaker-disjoint split) means
programme, and the report says so.

LRS3 (`import_lrs3`): pretrain/, trainval/ and test/, each `<talk>/<NNNNN>.mp4 .txt` (one TED talk, one speaker;
trainval and test .txt files end in a FRAME block of face boxes, pretrain ones in a word table). Manifests:
pretrain, train, val, test. LRS3 has no validation split, so val is held out of trainval by talk: the talks of
`val_ids` (a file, one talk folder or `<talk>/<NNNNN>` clip id per line: the clip's whole talk is held out), or else
a stable `val_percent` % (5) of the trainval talks chosen by a hash of the folder name. Pretrain and trainval share
talks, so the held-out talks' pretrain clips are skipped too: val shares no speaker with training. test/ shares
none with either by the corpus's design.

Transcripts: the `Text:` line (ISO-8859-1), tags such as `{LG}` (laughter) or `{NS}` (noise) removed, then
`avasr.text.normalize`. A transcript with characters outside the 29-symbol vocabulary (digits, accented letters, ...)
is skipped and counted, its file named in the report: one odd clip in 100 000 must not stop an import. A `.txt`
without a `Text:` line is an error naming the file: the folder is not an LRS corpus.

Long clips (pretrain runs to minutes): a clip with a word table (`WORD START END ASDSCORE`, then `word start end
score` lines, seconds) whose words end later than `max_seconds` (15, as av_hubert) is cut into segments at pauses
longer than `min_pause` (0.4 s): consecutive phrases are joined while the segment stays within the limit; each runs
from half the pause threshold before its first word to half after its last, on the 25 fps frame grid. Each segment
is a manifest line with offsets (avasr.data.manifest) and the words of its table as transcript. Speech without
such a pause for longer than the limit is skipped and counted. Clips without a word table are used whole.

Audio: ffmpeg extracts each clip's 16 kHz mono WAV into `<out>/audio/<folder>/<talk>/<NNNNN>.wav` (folder: main,
pretrain, trainval or test, as on disk); a cached WAV newer than its MP4 is reused.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from avasr.corpus.ffmpeg import EXTRACTED_SAMPLE_RATE, extract_audio, in_threads, require_ffmpeg
from avasr.corpus.report import MANIFEST_NAME, CorpusError, ImportReport
from avasr.data.manifest import write_manifest
from avasr.text import VocabularyError, normalize

TEXT_PREFIX = "Text:"
WORD_TABLE_HEADER = ["WORD", "START", "END", "ASDSCORE"]
FRAME_BLOCK_HEADER = "FRAME"
TRANSCRIPT_ENCODING = "iso-8859-1"
TAG_PATTERN = re.compile(r"\{[^{}]*\}")  # {LG}, {NS}, ...
VIDEO_SUFFIX = ".mp4"
TEXT_SUFFIX = ".txt"
AUDIO_CACHE_FOLDER = "audio"
FPS = 25  # LRS2 and LRS3 video; segment offsets are put on its frame grid
MAX_SECONDS = 15.0  # av_hubert's limit for pretrain utterances (auto_avsr keeps up to 16 s)
MIN_PAUSE = 0.4  # av_hubert cuts at pauses longer than this
LRS2_SPLITS = ("pretrain", "train", "val", "test")  # each has its official list <split>.txt
LRS3_FOLDERS = ("pretrain", "trainval", "test")
LRS3_VAL_PERCENT = 5
HASH_BUCKETS = 100
LENGTH_TOLERANCE = 1e-6  # seconds: sums of offsets on the frame grid are compared with this slack

# Skip reasons.
NO_TRANSCRIPT = "no transcript (.txt)"
NO_VIDEO = "no video (.mp4)"
EMPTY_VIDEO = "empty video (0 bytes)"
OUT_OF_VOCABULARY = "characters outside the vocabulary"
EMPTY_TRANSCRIPT = "empty transcript"
EXTRACTION_FAILED = "ffmpeg could not extract the audio"
IN_NO_LIST = "in no official split list"
LISTED_BUT_MISSING = "listed, but not on disk"
VAL_TALK_PRETRAIN = "pretrain clip of a validation talk"
NO_PAUSE = "speech without a pause longer than the limit"

LRS2_SPEAKER_NOTE = (
    "LRS2's folders are BBC programme broadcasts, not people: 'speaker' in these manifests (babble from other "
    "speakers, speaker-disjoint splits) means programme"
)


@dataclass(frozen=True)
class Word:
    text: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float
    words: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.words)


@dataclass(frozen=True)
class LrsClip:
    folder: str  # "main", "pretrain", "trainval" or "test": where it lies under the root
    video: Path  # <root>/<folder>/<talk>/<NNNNN>.mp4
    text_file: Path
    transcript: str  # normalised `Text:` line
    words: tuple[Word, ...] = ()  # its word table, when the .txt has one

    @property
    def talk(self) -> str:
        """The folder above the clip: a TED talk (LRS3) or a BBC programme broadcast (LRS2)."""
        return self.video.parent.name

    @property
    def key(self) -> str:
        """ "<talk>/<NNNNN>", as the official lists name it."""
        return f"{self.talk}/{self.video.stem}"

    @property
    def name(self) -> str:
        """ "<folder>/<talk>/<NNNNN>", unique within the corpus."""
        return f"{self.folder}/{self.key}"


def read_lrs_transcript(path: str | Path) -> str:
    """The text after `Text:` on the first line that has it, tags like `{LG}` removed (not yet normalised)."""
    path = Path(path)
    return _transcript_of(_read_lines(path), path)


def read_word_table(path: str | Path) -> list[Word]:
    """The `WORD START END ASDSCORE` table of an LRS .txt ([] when it has none); it ends at a blank line, a FRAME
    block or the end of the file. Errors name file and line."""
    path = Path(path)
    return _word_table_of(_read_lines(path), path)


def cut_at_pauses(words: list[Word], max_seconds: float, min_pause: float) -> tuple[list[Segment], list[tuple]]:
    """Segments of at most `max_seconds`, cut at pauses longer than `min_pause`, and the (start, end) of the phrases
    longer than the limit with no such pause inside (left out). See the module docstring."""
    phrases = _phrases(words, min_pause)
    margin = min_pause / 2
    spans = [(_on_frame_grid(max(0.0, p[0].start_s - margin)), _on_frame_grid(p[-1].end_s + margin)) for p in phrases]
    segments, dropped, i = [], [], 0
    while i < len(phrases):
        start, end = spans[i]
        if end - start > max_seconds + LENGTH_TOLERANCE:
            dropped.append(spans[i])
            i += 1
            continue
        j = i
        while j + 1 < len(phrases) and spans[j + 1][1] - start <= max_seconds + LENGTH_TOLERANCE:
            j += 1
        segments.append(Segment(start, spans[j][1], tuple(w.text for p in phrases[i : j + 1] for w in p)))
        i = j + 1
    return segments, dropped


def import_lrs2(
    root: str | Path,
    out: str | Path,
    *,
    max_seconds: float = MAX_SECONDS,
    min_pause: float = MIN_PAUSE,
    jobs: int | None = None,
) -> ImportReport:
    """Write `<out>/{pretrain,train,val,test}_manifest.txt` from LRS2's official lists; see the module docstring.

    jobs: parallel ffmpeg processes (default: one per CPU core).
    """
    root = _existing_root(root)
    if not (root / "main").is_dir():
        raise CorpusError(f"{root}: no main/ folder: not the LRS2 download's root (mvlrs_v1/)")
    lists = {split: _read_list(root, split) for split in LRS2_SPLITS}
    _refuse_clips_in_two_lists(lists)
    report = ImportReport("LRS2", notes=[LRS2_SPEAKER_NOTE])
    folders = {name: _scan_folder(root / name, report) for name in ("main", "pretrain") if (root / name).is_dir()}
    splits, listed = {}, set()
    for split, entries in lists.items():
        found, seen = folders.get("pretrain" if split == "pretrain" else "main", ({}, set()))
        splits[split] = []
        for key, where in entries:
            listed.add((split == "pretrain", key))
            if key in found:
                splits[split].append(found[key])
            elif key not in seen:  # a clip the scan skipped is counted once, with its own reason
                report.skip(LISTED_BUT_MISSING, f"{where}: {key}")
    for folder, (found, _) in folders.items():
        for key, clip in found.items():
            if (folder == "pretrain", key) not in listed:
                report.skip(IN_NO_LIST, clip.name)
    _write_splits(splits, Path(out), report, max_seconds, min_pause, jobs)
    return report


def import_lrs3(
    root: str | Path,
    out: str | Path,
    *,
    val_ids: str | Path | None = None,
    val_percent: int = LRS3_VAL_PERCENT,
    max_seconds: float = MAX_SECONDS,
    min_pause: float = MIN_PAUSE,
    jobs: int | None = None,
) -> ImportReport:
    """Write `<out>/{pretrain,train,val,test}_manifest.txt` for LRS3; see the module docstring.

    val_ids: a file naming the trainval talks held out for val (instead of the hash's `val_percent` %).
    jobs: parallel ffmpeg processes (default: one per CPU core).
    """
    if not 0 <= val_percent <= HASH_BUCKETS:
        raise CorpusError(f"val_percent must be in [0, {HASH_BUCKETS}], got {val_percent}")
    root = _existing_root(root)
    present = [name for name in LRS3_FOLDERS if _holds_clips(root / name)]
    if not present:
        raise CorpusError(f"{root}: no split folders with <talk>/<NNNNN>{VIDEO_SUFFIX} (pretrain/, trainval/, test/)")
    report = ImportReport("LRS3")
    clips = {name: list(_scan_folder(root / name, report)[0].values()) for name in present}
    talks = sorted({clip.talk for clip in clips.get("trainval", [])})
    if val_ids is not None:
        held, how = _read_val_ids(Path(val_ids), root / "trainval", set(talks)), f"named in {val_ids}"
    else:
        held, how = {t for t in talks if _bucket(t) < val_percent}, f"a {val_percent} % hash of the folder names"
    splits: dict[str, list[LrsClip]] = {}
    if "pretrain" in clips:
        splits["pretrain"] = [clip for clip in clips["pretrain"] if clip.talk not in held]
        for clip in clips["pretrain"]:
            if clip.talk in held:
                report.skip(VAL_TALK_PRETRAIN, clip.name)
    if "trainval" in clips:
        splits["train"] = [clip for clip in clips["trainval"] if clip.talk not in held]
        splits["val"] = [clip for clip in clips["trainval"] if clip.talk in held]
        report.notes.append(
            f"val: {len(held)} of {len(talks)} trainval folders held out ({how}), with their pretrain clips: "
            f"no talk (speaker) is in both val and training"
        )
    if "test" in clips:
        splits["test"] = clips["test"]
    _write_splits(splits, Path(out), report, max_seconds, min_pause, jobs)
    return report


def cached_wav(out: Path, clip: LrsClip) -> Path:
    return out / AUDIO_CACHE_FOLDER / clip.folder / clip.talk / f"{clip.video.stem}.wav"


# --- reading the corpus -----------------------------------------------------------------------------------------
def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding=TRANSCRIPT_ENCODING).splitlines()
    except OSError as e:
        raise CorpusError(f"{path}: cannot read transcript: {e}") from None


def _transcript_of(lines: list[str], path: Path) -> str:
    for line in lines:
        if line.startswith(TEXT_PREFIX):
            return TAG_PATTERN.sub(" ", line[len(TEXT_PREFIX) :]).strip()
    raise CorpusError(f"{path}: no '{TEXT_PREFIX}' line: not an LRS2/LRS3 transcript")


def _word_table_of(lines: list[str], path: Path) -> list[Word]:
    header = next((i for i, line in enumerate(lines) if line.split() == WORD_TABLE_HEADER), None)
    if header is None:
        return []
    words = []
    for number, line in enumerate(lines[header + 1 :], start=header + 2):
        if not line.strip() or line.startswith(FRAME_BLOCK_HEADER):
            break
        fields = line.split()
        try:
            start, end = float(fields[1]), float(fields[2])
            if len(fields) != len(WORD_TABLE_HEADER) or not 0 <= start <= end:
                raise ValueError
        except (ValueError, IndexError):
            raise CorpusError(
                f"{path}:{number}: expected '{' '.join(WORD_TABLE_HEADER)}' fields (times in seconds, start <= end), "
                f"got {line!r}"
            ) from None
        words.append(Word(fields[0], start, end))
    return words


def _scan_folder(folder: Path, report: ImportReport) -> tuple[dict[str, LrsClip], set[str]]:
    """The usable clips of one folder by "<talk>/<NNNNN>", and every such name seen on disk; the others are
    recorded in `report` with their reason."""
    videos = {p.with_suffix(""): p for p in folder.glob(f"*/*{VIDEO_SUFFIX}")}
    texts = {p.with_suffix(""): p for p in folder.glob(f"*/*{TEXT_SUFFIX}")}
    clips, seen = {}, set()
    for stem in sorted(videos.keys() | texts.keys()):
        key = f"{stem.parent.name}/{stem.name}"
        seen.add(key)
        name = f"{folder.name}/{key}"
        if stem not in texts:
            report.skip(NO_TRANSCRIPT, name)
            continue
        if stem not in videos:
            report.skip(NO_VIDEO, name)
            continue
        if videos[stem].stat().st_size == 0:
            report.skip(EMPTY_VIDEO, name)
            continue
        lines = _read_lines(texts[stem])
        try:
            text = normalize(_transcript_of(lines, texts[stem]), str(texts[stem]))
        except VocabularyError:
            report.skip(OUT_OF_VOCABULARY, str(texts[stem]))
            continue
        if not text:
            report.skip(EMPTY_TRANSCRIPT, str(texts[stem]))
            continue
        words = tuple(_word_table_of(lines, texts[stem]))
        clips[key] = LrsClip(folder.name, videos[stem], texts[stem], text, words)
    return clips, seen


def _read_list(root: Path, split: str) -> list[tuple[str, str]]:
    """An LRS2 list's (clip, "list:line") pairs: the first token of each line."""
    path = root / f"{split}.txt"
    if not path.is_file():
        names = ", ".join(f"{s}.txt" for s in LRS2_SPLITS)
        raise CorpusError(f"{root}: LRS2's split list {path.name} is missing (the download's lists {names} belong "
                          f"beside main/ and pretrain/)")  # fmt: skip
    lines = path.read_text(encoding="ascii", errors="replace").splitlines()
    return [(line.split()[0], f"{path}:{n}") for n, line in enumerate(lines, start=1) if line.strip()]


def _refuse_clips_in_two_lists(lists: dict[str, list[tuple[str, str]]]) -> None:
    first: dict[tuple[bool, str], str] = {}
    for split, entries in lists.items():
        for key, where in entries:
            place = (split == "pretrain", key)  # pretrain.txt names another folder's clips
            if place in first:
                raise CorpusError(f"{where}: {key} is also listed in {first[place]}: the splits would share it")
            first[place] = where


def _read_val_ids(path: Path, trainval: Path, talks: set[str]) -> set[str]:
    """The talks a val id file names (a talk folder or a `<talk>/<NNNNN>` clip per line; `#` starts a comment)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CorpusError(f"{path}: cannot read the validation ids: {e}") from None
    held = set()
    for number, line in enumerate(lines, start=1):
        if not line.split() or line.lstrip().startswith("#"):
            continue
        talk = line.split()[0].split("/")[0]
        if talk not in talks:
            raise CorpusError(f"{path}:{number}: {talk} is no folder of {trainval} with usable clips")
        held.add(talk)
    return held


# --- writing the manifests --------------------------------------------------------------------------------------
def _write_splits(
    splits: dict[str, list[LrsClip]], out: Path, report: ImportReport, max_seconds: float, min_pause: float, jobs
) -> None:
    """Extract every clip's audio, then write one manifest per split (long clips cut at pauses)."""
    if max_seconds <= 0 or min_pause < 0:
        raise CorpusError(f"max_seconds must be > 0 and min_pause >= 0, got {max_seconds} and {min_pause}")
    ffmpeg = require_ffmpeg()
    clips = [clip for split_clips in splits.values() for clip in split_clips]
    failed = set()
    extract = partial(_extract, out=out, ffmpeg=ffmpeg)
    for clip, problem in zip(clips, in_threads(extract, clips, jobs, "extracting audio")):
        if problem is not None:
            report.skip(EXTRACTION_FAILED, problem)
            failed.add(clip.name)
    for split, split_clips in splits.items():
        rows = []
        for clip in split_clips:
            if clip.name not in failed:
                rows += _rows(clip, cached_wav(out, clip), report, max_seconds, min_pause)
        report.manifests[split] = write_manifest(out / MANIFEST_NAME.format(split=split), rows)
        report.kept[split] = len(rows)


def _extract(clip: LrsClip, out: Path, ffmpeg: str) -> str | None:
    try:
        extract_audio(clip.video, cached_wav(out, clip), ffmpeg, EXTRACTED_SAMPLE_RATE)
        return None
    except CorpusError as e:
        return str(e)


def _rows(clip: LrsClip, wav: Path, report: ImportReport, max_seconds: float, min_pause: float) -> list[tuple]:
    """The clip as one manifest row, or its segments when its words run past `max_seconds`."""
    if not clip.words or _on_frame_grid(clip.words[-1].end_s + min_pause / 2) <= max_seconds + LENGTH_TOLERANCE:
        return [(wav, clip.video, clip.transcript)]
    segments, dropped = cut_at_pauses(list(clip.words), max_seconds, min_pause)
    for start, end in dropped:
        report.skip(NO_PAUSE, f"{clip.name} {start:g}-{end:g} s")
    rows = []
    for segment in segments:
        where = f"{clip.text_file} {segment.start_s:g}-{segment.end_s:g} s"
        try:
            text = normalize(TAG_PATTERN.sub(" ", segment.text), where)
        except VocabularyError:
            report.skip(OUT_OF_VOCABULARY, where)
            continue
        if not text:
            report.skip(EMPTY_TRANSCRIPT, where)
            continue
        rows.append((wav, clip.video, text, segment.start_s, segment.end_s))
    return rows


# --- helpers ----------------------------------------------------------------------------------------------------
def _phrases(words: list[Word], min_pause: float) -> list[list[Word]]:
    """Runs of words with no pause longer than `min_pause` between them."""
    phrases = [[words[0]]] if words else []
    for previous, word in zip(words, words[1:]):
        if word.start_s - previous.end_s > min_pause:
            phrases.append([word])
        else:
            phrases[-1].append(word)
    return phrases


def _on_frame_grid(seconds: float) -> float:
    """The nearest video frame's time (multiples of 1/FPS), so a segment's audio and video start together."""
    return round(seconds * FPS) / FPS


def _bucket(talk: str) -> int:
    return zlib.crc32(talk.encode("utf-8")) % HASH_BUCKETS


def _existing_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: LRS root is not a folder")
    return root


def _holds_clips(folder: Path) -> bool:
    return folder.is_dir() and (any(folder.glob(f"*/*{VIDEO_SUFFIX}")) or any(folder.glob(f"*/*{TEXT_SUFFIX}")))
