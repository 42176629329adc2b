import numpy as np
import pytest
import torch

from avasr.config import (
    AUDIO_TIME_DOWNSAMPLING,
    EDGE_PADDING,
    FUSIONS,
    NUM_CLASSES,
    TIME_PADDINGS,
    ZERO_PADDING,
    Config,
)
from avasr.model import build_model, count_parameters, lengths_to_mask
from avasr.model.avsr import without_still_appearance
from avasr.model.edges import pad_time
from avasr.model.encoders import AudioEncoder, VideoEncoder
from avasr.model.fusion import FUSION_CLASSES
from avasr.model.temporal import TemporalBlock

CONFIG = Config()
LENGTHS = (1, 7, 75, 125)


@pytest.mark.parametrize("T", LENGTHS)
def test_encoders_bring_both_streams_to_the_video_rate(T):
    torch.manual_seed(0)
    audio = AudioEncoder(CONFIG).eval()(torch.randn(2, 1, 40, AUDIO_TIME_DOWNSAMPLING * T))
    video = VideoEncoder(CONFIG).eval()(torch.randn(2, T, 1, 64, 64))
    assert audio.shape == (2, T, 512)
    assert video.shape == (2, T, 512)


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("T", LENGTHS)
def test_fusions_keep_shape(fusion, T):
    module = FUSION_CLASSES[fusion](512, 0.0).eval()
    mask = lengths_to_mask(torch.tensor([T, max(1, T - 3)]), T)
    assert module(torch.randn(2, T, 512), torch.randn(2, T, 512), mask).shape == (2, T, 512)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_whole_model_shapes_and_log_probs(fusion):
    model = build_model(CONFIG.replace(fusion=fusion)).eval()
    for T in (5, 31):
        out = model(torch.randn(3, 1, 40, 4 * T), torch.randn(3, T, 1, 64, 64), torch.tensor([T, T - 1, 2]))
        assert out.shape == (3, T, 29)
        assert torch.allclose(out.exp().sum(-1), torch.ones(3, T), atol=1e-5)


def expected_parameters(config: Config) -> int:
    """The parameter count of the architecture in the README, layer by layer (not read from the modules)."""
    c1, c2, c3 = config.encoder_channels
    D = config.feature_dim
    convs = 9 * (1 * c1 + c1 * c2 + c2 * c3) + 2 * (c1 + c2 + c3)  # 3x3 kernels without bias; BatchNorm scale, shift

    def fc_fc(d_in: int) -> int:
        return d_in * D + D + D * D + D

    audio = convs + fc_fc(c3 * config.n_mels // 8)  # frequency halved three times: 40 bands -> 5
    video = convs + fc_fc(c3 * 4 * 4)  # pooled to 4 x 4
    # depthwise conv (kernel + bias per channel), pointwise linear, LayerNorm
    temporal = config.temporal_layers * (D * config.temporal_kernel + D + D * D + D + 2 * D)
    head = D * NUM_CLASSES + NUM_CLASSES
    fusion = {
        "simple": 2 * D * D + D,  # [a; v] -> D
        "weighted": 2,  # one logit per modality
        "attention": (3 * D * D + 3 * D) + (D * D + D) + 2 * D + (2 * D * D + D),  # q/k/v, out, LayerNorm, [a; v] -> D
        "adaptive": 2 * D * D + D,  # the gate: [a; v] -> D
    }[config.fusion]
    return audio + video + temporal + head + fusion


SMALLER = Config(encoder_channels=(4, 8, 16), feature_dim=32, lip_size=32, temporal_layers=2, temporal_kernel=3)


@pytest.mark.parametrize("config", [CONFIG, SMALLER], ids=["default", "smaller"])
@pytest.mark.parametrize("fusion", FUSIONS)
def test_parameter_count_follows_the_architecture(config, fusion):
    config = config.replace(fusion=fusion)
    assert count_parameters(build_model(config)) == expected_parameters(config)


def test_every_fusion_is_under_five_million_parameters():
    counts = {f: count_parameters(build_model(CONFIG.replace(fusion=f))) for f in FUSIONS}
    print("parameters per fusion:", counts)
    # the README's table, which expected_parameters derives
    assert counts == {"simple": 3_428_317, "weighted": 2_903_519, "attention": 4_479_965, "adaptive": 3_428_317}
    assert max(counts.values()) < 5_000_000


def test_weighted_fusion_starts_with_equal_modality_weights():
    module = FUSION_CLASSES["weighted"](4, 0.0)
    a, v = torch.ones(1, 2, 4), 3 * torch.ones(1, 2, 4)
    assert torch.equal(module.modality_weights(), torch.tensor([0.5, 0.5]))
    assert torch.equal(module(a, v, None), 2 * torch.ones(1, 2, 4))


def test_adaptive_gate_is_per_frame():
    module = FUSION_CLASSES["adaptive"](8, 0.0).eval()
    gate = module.gate(torch.randn(1, 6, 16))
    assert gate.shape == (1, 6, 8) and bool(((gate > 0) & (gate < 1)).all())
    assert gate[0, 0].ne(gate[0, 1]).any()


def test_adaptive_fusion_is_the_gated_mix_of_the_readme():
    """g = sigmoid(W [a; v] + b) per frame and channel, output g * a + (1 - g) * v: computed here in numpy from the
    module's weights."""
    torch.manual_seed(0)
    module = FUSION_CLASSES["adaptive"](8, 0.0).eval()
    a, v = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    (linear,) = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    W, b = linear.weight.detach().double().numpy(), linear.bias.detach().double().numpy()
    an, vn = a.double().numpy(), v.double().numpy()
    g = 1 / (1 + np.exp(-(np.concatenate([an, vn], axis=-1) @ W.T + b)))
    expected = g * an + (1 - g) * vn
    np.testing.assert_allclose(module(a, v, None).detach().double().numpy(), expected, rtol=0, atol=1e-6)


def test_attention_fusion_is_the_windowed_cross_attention_of_the_readme():
    """Audio queries the video within +-5 frames (8 heads), then audio concat LayerNorm(video + attended) is projected
    (linear, ReLU): computed here in numpy from the module's weights."""
    torch.manual_seed(0)
    D, T, heads = 16, 14, 8
    module = FUSION_CLASSES["attention"](D, 0.0).eval()
    a, v = torch.randn(1, T, D), torch.randn(1, T, D)
    weights = {name: p.detach().double().numpy() for name, p in module.named_parameters()}
    in_w, in_b = weights["attn.in_proj_weight"], weights["attn.in_proj_bias"]
    an, vn = a[0].double().numpy(), v[0].double().numpy()
    q, k, values = (x @ in_w[i * D : (i + 1) * D].T + in_b[i * D : (i + 1) * D] for i, x in enumerate((an, vn, vn)))
    steps = np.arange(T)
    far = np.abs(steps[:, None] - steps[None, :]) > 5
    context = []
    for h in np.split(np.arange(D), heads):
        scores = q[:, h] @ k[:, h].T / np.sqrt(len(h))
        scores[far] = -np.inf
        p = np.exp(scores - scores.max(axis=1, keepdims=True))
        context.append(p / p.sum(axis=1, keepdims=True) @ values[:, h])
    x = vn + np.concatenate(context, axis=1) @ weights["attn.out_proj.weight"].T + weights["attn.out_proj.bias"]
    normed = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)
    normed = normed * weights["norm.weight"] + weights["norm.bias"]
    proj_w, proj_b = (w for name, w in weights.items() if name.startswith("proj."))  # the Linear before the ReLU
    expected = np.maximum(np.concatenate([an, normed], axis=1) @ proj_w.T + proj_b, 0)
    got = module(a, v, lengths_to_mask(torch.tensor([T]), T))[0].detach().double().numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_uses_both_streams_at_every_frame(fusion):
    torch.manual_seed(0)
    module = FUSION_CLASSES[fusion](16, 0.0).eval()
    a, v = torch.randn(1, 12, 16), torch.randn(1, 12, 16)
    mask = lengths_to_mask(torch.tensor([12]), 12)
    out = module(a, v, mask)
    for changed_audio, changed_video in ((a + torch.randn_like(a), v), (a, v + torch.randn_like(v))):
        moved = (module(changed_audio, changed_video, mask) - out).abs().amax(dim=-1)  # (1, T)
        assert bool((moved > 1e-4).all()), moved


@pytest.mark.parametrize("changed", [0, 6, 11])
def test_attention_sees_the_video_within_five_frames_and_no_further(changed):
    """Audio frame t attends to video frames t - 5 ... t + 5 (README: +-200 ms): moving one video frame changes
    the fused output there and nowhere else."""
    torch.manual_seed(0)
    module = FUSION_CLASSES["attention"](16, 0.0).eval()
    T = 20
    a, v = torch.randn(1, T, 16), torch.randn(1, T, 16)
    mask = lengths_to_mask(torch.tensor([T]), T)
    moved_video = v.clone()
    moved_video[0, changed] += 3 * torch.randn(16)
    moved = (module(a, moved_video, mask) - module(a, v, mask)).abs().amax(dim=-1)[0]  # (T,)
    within = [t for t in range(T) if abs(t - changed) <= 5]
    assert torch.nonzero(moved > 1e-6).flatten().tolist() == within


@pytest.mark.parametrize("time_padding", TIME_PADDINGS)
@pytest.mark.parametrize("fusion", ["attention", "adaptive"])
def test_padding_does_not_change_valid_frames_after_fusion_and_temporal_block(fusion, time_padding):
    torch.manual_seed(0)
    fuse, temporal = FUSION_CLASSES[fusion](16, 0.0).eval(), TemporalBlock(16, 3, 5, 0.0, time_padding).eval()
    a, v = torch.randn(1, 10, 16), torch.randn(1, 10, 16)
    alone = temporal(fuse(a, v, lengths_to_mask(torch.tensor([10]), 10)), lengths_to_mask(torch.tensor([10]), 10))
    padded_a = torch.cat([a, 100 * torch.randn(1, 6, 16)], dim=1)  # garbage beyond the length
    padded_v = torch.cat([v, 100 * torch.randn(1, 6, 16)], dim=1)
    mask = lengths_to_mask(torch.tensor([10]), 16)
    padded = temporal(fuse(padded_a, padded_v, mask), mask)
    assert torch.allclose(padded[:, :10], alone, atol=1e-5)
    assert torch.equal(padded[:, 10:], torch.zeros(1, 6, 16))


def test_attention_never_gives_nan_on_fully_padded_rows():
    fuse = FUSION_CLASSES["attention"](16, 0.0)
    out = fuse(torch.randn(2, 9, 16), torch.randn(2, 9, 16), lengths_to_mask(torch.tensor([9, 2]), 9))
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in fuse.parameters() if p.grad is not None)


def test_temporal_kernel_must_be_odd():
    with pytest.raises(ValueError, match="must be odd"):
        TemporalBlock(8, 2, 4, 0.0, EDGE_PADDING)


def test_edge_padding_repeats_each_rows_own_first_and_last_valid_frames():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 0.0, 0.0]])[:, None, :]  # (B, 1, T), row 1 two frames long
    padded = pad_time(x, torch.tensor([4, 2]), 2, dim=2, mode=EDGE_PADDING)[:, 0]
    assert padded.tolist() == [[1, 1, 1, 2, 3, 4, 4, 4], [5, 5, 5, 6, 6, 6, 6, 6]]
    zeros = pad_time(x, torch.tensor([4, 2]), 2, dim=2, mode=ZERO_PADDING)[:, 0]
    assert zeros.tolist() == [[0, 0, 1, 2, 3, 4, 0, 0], [0, 0, 5, 6, 0, 0, 0, 0]]


def trained_like(config: Config) -> torch.nn.Module:
    """A model in eval mode whose BatchNorm statistics are not the identity, as a trained one's are not."""
    model = build_model(config).eval()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return model


@pytest.mark.parametrize("time_padding, edge_visible", [(EDGE_PADDING, False), (ZERO_PADDING, True)])
def test_with_edge_padding_a_clips_start_looks_like_more_of_its_leading_silence(time_padding, edge_visible):
    torch.manual_seed(0)
    model = trained_like(CONFIG.replace(time_padding=time_padding, feature_dim=64, encoder_channels=(8, 8, 8)))
    T, still = 40, 20  # the first 20 frames are one silent frame and one still face, repeated
    audio, video = torch.randn(1, 1, 40, 4 * T), torch.randn(1, T, 1, 64, 64)
    audio[..., : 4 * still], video[:, :still] = audio[..., :1], video[:, :1]
    out = model(audio, video, torch.tensor([T]))[0]  # (T, C)
    # frame 0 against a frame inside the silence whose receptive field (29 frames wide) does not reach the speech
    assert torch.allclose(out[0], out[3], atol=1e-5) != edge_visible


@pytest.mark.parametrize("fusion", FUSIONS)
def test_whole_model_output_does_not_depend_on_batch_padding(fusion):
    torch.manual_seed(0)
    model = trained_like(CONFIG.replace(fusion=fusion, feature_dim=64, encoder_channels=(8, 8, 8)))
    T, pad = 9, 6
    audio, video = torch.randn(1, 1, 40, 4 * T), torch.randn(1, T, 1, 64, 64)
    alone = model(audio, video, torch.tensor([T]))
    padded = model(
        torch.cat([audio, torch.zeros(1, 1, 40, 4 * pad)], dim=3),
        torch.cat([video, torch.zeros(1, pad, 1, 64, 64)], dim=1),
        torch.tensor([T]),
    )
    assert torch.allclose(padded[:, :T], alone, atol=1e-5)


@pytest.mark.parametrize("lip_size, pool", [(64, torch.nn.AdaptiveAvgPool2d), (32, torch.nn.Identity)])
def test_conv_weights_are_channels_last_and_a_contiguous_checkpoint_loads_into_them(lip_size, pool):
    config = Config(lip_size=lip_size, encoder_channels=(4, 8, 16), feature_dim=32, temporal_layers=1)
    torch.manual_seed(0)
    trained = build_model(config).eval()
    assert isinstance(trained.video_encoder.convs[-1], pool)
    convs = [m for m in trained.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6 and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    contiguous = {k: v.contiguous() for k, v in trained.state_dict().items()}  # as saved before the layout change
    assert not contiguous["video_encoder.convs.1.0.weight"].is_contiguous(memory_format=torch.channels_last)
    loaded = build_model(config).eval()
    loaded.load_state_dict(contiguous)
    assert loaded.video_encoder.convs[1][0].weight.is_contiguous(memory_format=torch.channels_last)
    audio, video = torch.randn(2, 1, 40, 4 * 9), torch.randn(2, 9, 1, lip_size, lip_size)
    assert torch.equal(loaded(audio, video), trained(audio, video))


def test_lip_motion_takes_each_pixel_s_mean_over_the_valid_frames_away():
    video = torch.tensor([1.0, 3.0, 8.0]).reshape(1, 3, 1, 1, 1)  # (B, T, 1, H, W)
    assert without_still_appearance(video, torch.tensor([3])).flatten().tolist() == [-3.0, -1.0, 4.0]
    assert without_still_appearance(video, torch.tensor([2])).flatten().tolist() == [-1.0, 1.0, 0.0]  # padding


def test_with_lip_motion_a_face_s_still_appearance_does_not_reach_the_model():
    torch.manual_seed(0)
    config = CONFIG.replace(feature_dim=64, encoder_channels=(8, 8, 8), lip_size=32)
    T = 7
    audio, video = torch.randn(1, 1, 40, 4 * T), torch.randn(1, T, 1, 32, 32)
    other_face = video + torch.randn(1, 1, 1, 32, 32)  # the same movement on another still image
    moving = build_model(config.replace(lip_motion=True)).eval()
    assert torch.allclose(moving(audio, video), moving(audio, other_face), atol=1e-5)
    still = build_model(config).eval()
    assert not torch.allclose(still(audio, video), still(audio, other_face), atol=1e-3)
