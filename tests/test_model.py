import pytest
import torch

from avasr.config import AUDIO_TIME_DOWNSAMPLING, FUSIONS, Config
from avasr.model import build_model, count_parameters, lengths_to_mask
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


def test_every_fusion_is_under_five_million_parameters():
    counts = {f: count_parameters(build_model(CONFIG.replace(fusion=f))) for f in FUSIONS}
    print("parameters per fusion:", counts)
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


@pytest.mark.parametrize("fusion", ["attention", "adaptive"])
def test_padding_does_not_change_valid_frames_after_fusion_and_temporal_block(fusion):
    torch.manual_seed(0)
    fuse, temporal = FUSION_CLASSES[fusion](16, 0.0).eval(), TemporalBlock(16, 3, 5, 0.0).eval()
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
        TemporalBlock(8, 2, 4, 0.0)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_whole_model_output_does_not_depend_on_batch_padding(fusion):
    torch.manual_seed(0)
    model = build_model(CONFIG.replace(fusion=fusion, feature_dim=64, encoder_channels=(8, 8, 8))).eval()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # trained-like statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
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
