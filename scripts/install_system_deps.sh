#!/usr/bin/env bash
# Installs the Debian packages avasr needs when they are missing: the built-in corpus's three speech engines,
# espeak-ng (used through libespeak-ng.so.1), festival with its English voices festvox-kallpc16k,
# festvox-kdlpc16k and festvox-us-slt-hts, and flite; ffmpeg (audio extraction from LRS-style MP4s); and chromium
# with chromium-driver (the headless browser the MLflow UI test drives through selenium).
# Silent when everything is already there.
set -euo pipefail

missing=()
ldconfig -p 2>/dev/null | grep -q 'libespeak-ng.so.1 ' || missing+=(espeak-ng libespeak-ng1)
command -v festival >/dev/null 2>&1 || missing+=(festival)
voices=/usr/share/festival/voices
[ -d "$voices/english/kal_diphone" ] || missing+=(festvox-kallpc16k)
[ -d "$voices/english/ked_diphone" ] || missing+=(festvox-kdlpc16k)
[ -d "$voices/us/cmu_us_slt_arctic_hts" ] || missing+=(festvox-us-slt-hts)
command -v flite >/dev/null 2>&1 || missing+=(flite)
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "avasr setup: installing Debian packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "avasr setup: cannot install ${missing[*]}: not root and no password-less sudo." >&2
    echo "  Ask an administrator to run: apt-get install -y ${missing[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "avasr setup: apt-get not found; install these packages with your system's package manager: ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! { "${SUDO[@]}" apt-get update -qq && "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    echo "avasr setup: apt-get could not install ${missing[*]} (no network or no package mirror?)." >&2
    echo "  Install them by hand: apt-get install -y ${missing[*]}" >&2
    exit 1
fi
