import logging
import math
import os
import time

import pytest
import torch
from torch import Tensor, nn

from robustdistiller.config import ConfigError
from robustdistiller.evaluate.heads import CTCProbe, UtteranceClassifier, WeightedLayerSum
from robustdistiller.evaluate.probes import (
    FeatureCache,
    evaluate_probe,
    extract_features,
    train_probe,
    upstream_frame_lengths,
)

SR = 16000
TONES = (300.0, 800.0, 1500.0, 3000.0)  # one per class / CTC symbol


class FakeUpstream(nn.Module):
    """Band energies of 400-sample frames every 320 samples (the wav2vec2 frame grid).

    Layer 0 is informative, layer 1 half informative and half noise, layer 2 pure noise.
    """

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("gain", torch.ones(1))
        self.calls = 0

    def extract(self, wavs: Tensor, lengths: Tensor) -> list[Tensor]:
        self.calls += 1
        frames = wavs.unfold(1, 400, 320) * torch.hann_window(400)
        spec = torch.fft.rfft(frames).abs()[..., : self.dim * 12]
        bands = torch.log1p(10 * spec.reshape(*spec.shape[:2], self.dim, 12).mean(-1)) * self.gain
        noise = torch.randn(bands.shape, generator=torch.Generator().manual_seed(self.calls))
        return [bands, 0.5 * bands + noise, noise]


def tone(freq: float, samples: int, gen: torch.Generator) -> Tensor:
    t = torch.arange(samples) / SR
    phase = 2 * math.pi * torch.rand(1, generator=gen)
    amp = 0.05 + 0.2 * torch.rand(1, generator=gen)
    return amp * torch.sin(2 * math.pi * freq * t + phase) + 0.01 * torch.randn(samples, generator=gen)


def classification_set(n: int, seed: int) -> tuple[list[Tensor], list[int]]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(TONES), (n,), generator=gen).tolist()
    wavs = [tone(TONES[c], int(torch.randint(4800, 9600, (1,), generator=gen)), gen) for c in labels]
    return wavs, labels


def sequence_set(n: int, seed: int) -> tuple[list[Tensor], list[list[int]]]:
    """Utterances of 2-4 tone segments (4 frames each); labels are the symbols 1..4, no repeats."""
    gen = torch.Generator().manual_seed(seed)
    wavs, labels = [], []
    for _ in range(n):
        length = int(torch.randint(2, 5, (1,), generator=gen))
        seq: list[int] = []
        while len(seq) < length:
            sym = int(torch.randint(1, len(TONES) + 1, (1,), generator=gen))
            if not seq or sym != seq[-1]:
                seq.append(sym)
        wavs.append(torch.cat([tone(TONES[s - 1], 4 * 320, gen) for s in seq] + [torch.zeros(400)]))
        labels.append(seq)
    return wavs, labels


@pytest.fixture(scope="module")
def tone_features():
    upstream = FakeUpstream()
    sets = {name: classification_set(n, seed) for name, n, seed in [("train", 80, 0), ("val", 40, 1), ("test", 80, 2)]}
    return {name: (extract_features(upstream, wavs), labels) for name, (wavs, labels) in sets.items()}


def test_default_frame_grid_is_the_wav2vec2_cnn():
    class NoFrameLengths:
        def extract(self, wavs: Tensor, lengths: Tensor) -> list[Tensor]:
            raise AssertionError("not called")

    lengths = torch.tensor([16000, 400, 399, 720, 719])
    assert upstream_frame_lengths(NoFrameLengths(), lengths).tolist() == [49, 1, 0, 2, 1]


def test_extract_features_trims_padding_and_keeps_order():
    gen = torch.Generator().manual_seed(0)
    wavs = [tone(300.0, n, gen) for n in (16000, 4000, 8000, 720)]
    upstream = FakeUpstream()
    one = extract_features(upstream, wavs, batch_size=1)
    many = extract_features(upstream, wavs, batch_size=3)
    assert [f.shape for f in one] == [(3, 49, 16), (3, 12, 16), (3, 24, 16), (3, 2, 16)]
    assert all(f.dtype == torch.float16 for f in one)
    # Layer 0 is deterministic: batching and padding must not change it.
    for a, b in zip(one, many):
        assert torch.equal(a[0], b[0])


def test_extract_features_uses_the_upstreams_frame_lengths():
    class Halved(FakeUpstream):
        def frame_lengths(self, lengths: Tensor) -> Tensor:
            return (lengths - 400) // 640 + 1

    feats = extract_features(Halved(), [torch.ones(16000) * 0.1])
    assert feats[0].shape == (3, 25, 16)


def test_extract_features_rejects_bad_audio():
    upstream = FakeUpstream()
    with pytest.raises(ValueError, match="utterance 1.*NaN"):
        extract_features(upstream, [torch.zeros(800), torch.full((800,), math.nan)])
    with pytest.raises(ValueError, match="receptive field, e.g. utterance 0 "):
        extract_features(upstream, [torch.zeros(300)])
    with pytest.raises(ValueError, match="1-D"):
        extract_features(upstream, [torch.zeros(2, 800)])


def test_feature_cache_hit_is_identical(tmp_path, caplog):
    wavs, _ = classification_set(6, seed=3)
    upstream = FakeUpstream()
    cache = FeatureCache(tmp_path)
    first = cache.features(upstream, wavs, condition="snr5", batch_size=4)
    calls = upstream.calls
    assert calls == 2
    second = cache.features(upstream, wavs, condition="snr5", batch_size=4)
    assert upstream.calls == calls  # served from disk
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    # Another condition, other audio or other weights are different entries.
    cache.features(upstream, wavs, condition="clean")
    assert upstream.calls > calls
    calls = upstream.calls
    upstream.gain.fill_(2.0)
    cache.features(upstream, wavs, condition="snr5")
    assert upstream.calls > calls
    assert len(list(tmp_path.glob("*.pt"))) == 3
    # A damaged file is rebuilt, not fatal.
    for path in tmp_path.glob("*.pt"):
        path.write_bytes(b"garbage")
    calls = upstream.calls
    with caplog.at_level(logging.WARNING):
        again = cache.features(upstream, wavs, condition="snr5")
    assert upstream.calls > calls and "unreadable" in caplog.text
    assert len(again) == len(wavs)


def test_cache_needs_an_identity_for_plain_objects(tmp_path):
    class Plain:
        def extract(self, wavs: Tensor, lengths: Tensor) -> list[Tensor]:
            return [wavs.unfold(1, 400, 320)]

    wavs = [torch.ones(1000)]
    with pytest.raises(ValueError, match="model_id"):
        FeatureCache(tmp_path).features(Plain(), wavs, condition="clean")
    assert FeatureCache(tmp_path).features(Plain(), wavs, condition="clean", model_id="plain-v1")[0].shape == (
        1,
        2,
        400,
    )


def _cache_of_an_hour_ago(folder, upstream, wavs):
    """A cache folder holding three conditions' features, last touched an hour ago."""
    earlier = FeatureCache(folder)
    for condition in ("clean", "snr0", "snr5"):
        earlier.features(upstream, wavs, condition=condition)
    an_hour_ago = time.time() - 3600
    for entry in earlier.used:
        os.utime(entry, (an_hour_ago, an_hour_ago))


def test_cache_prunes_what_it_did_not_serve_and_nothing_else(tmp_path):
    wavs, _ = classification_set(4, seed=3)
    upstream = FakeUpstream()
    _cache_of_an_hour_ago(tmp_path, upstream, wavs)
    (tmp_path / "notes.txt").write_text("not the cache's")
    (tmp_path / ("f" * 32 + ".pth")).write_bytes(b"not a cache entry name either")
    dead_writer = tmp_path / f".{'a' * 32}.pt.tmp-999999999-x1.pt"  # a pid no process has
    dead_writer.write_bytes(b"half")
    live_writer = tmp_path / f".{'b' * 32}.pt.tmp-{os.getpid()}-x2.pt"
    live_writer.write_bytes(b"half")

    later = FeatureCache(tmp_path)
    calls = upstream.calls
    later.features(upstream, wavs, condition="snr0")  # one of the three, served from disk
    assert upstream.calls == calls
    files, size = later.prune()
    assert files == 3 and size > 0  # two unused entries and the dead writer's temp file
    assert sorted(p.name for p in tmp_path.glob("[!.]*.pt")) == [p.name for p in later.used]
    assert {"notes.txt", "f" * 32 + ".pth", live_writer.name} <= {p.name for p in tmp_path.iterdir()}
    assert not dead_writer.exists()

    assert later.clear()[0] == 1
    assert tmp_path.is_dir() and not list(tmp_path.glob("[!.]*.pt"))  # the foreign files keep the folder
    only_cache = FeatureCache(tmp_path / "own")
    only_cache.features(upstream, wavs, condition="clean")
    assert only_cache.clear()[0] == 1 and not (tmp_path / "own").exists()
    assert FeatureCache(tmp_path / "never-made").prune() == (0, 0)


def test_prune_keeps_what_a_concurrent_evaluation_is_using(tmp_path):
    wavs, _ = classification_set(4, seed=3)
    upstream = FakeUpstream()
    _cache_of_an_hour_ago(tmp_path, upstream, wavs)
    this, other = FeatureCache(tmp_path), FeatureCache(tmp_path)
    this.features(upstream, wavs, condition="clean")
    other.features(upstream, wavs, condition="snr0")  # a hit on an old entry, while this one runs
    other.features(upstream, wavs, condition="snr10")  # a new entry, while this one runs
    files, size = this.prune()
    assert files == 1 and size > 0
    left = {p.name for p in tmp_path.glob("*.pt")}
    assert left == {p.name for p in this.used | other.used}  # only the entry nobody used went


def test_weighted_layer_sum_starts_uniform():
    wls = WeightedLayerSum(3)
    x = torch.randn(2, 3, 5, 4)
    assert wls.layer_weights() == pytest.approx([1 / 3] * 3)
    assert torch.allclose(wls(x), x.mean(1), atol=1e-6)
    normed = WeightedLayerSum(3, layer_norm=True)(x * 100 + 7)
    assert normed.abs().max() < 10


def test_probe_learns_a_separable_task(tone_features):
    (tr, tr_y), (va, va_y), (te, te_y) = tone_features["train"], tone_features["val"], tone_features["test"]
    rng_state = torch.get_rng_state()
    probe = train_probe(tr, tr_y, va, va_y, task="utterance", epochs=20, lr=1e-2, seed=0, patience=8, batch_size=16)
    assert torch.equal(torch.get_rng_state(), rng_state)  # the caller's global RNG is untouched
    result = evaluate_probe(probe, te, te_y)
    assert result["n"] == 80 and result["accuracy"] >= 0.95
    weights = probe.layer_weights
    assert sum(weights) == pytest.approx(1.0)
    assert weights[2] < weights[0]  # the noise layer loses weight
    assert probe.best_epoch <= probe.epochs_run and len(probe.history) == probe.epochs_run
    # Fixed seed: a second run is the same probe.
    again = train_probe(tr, tr_y, va, va_y, task="utterance", epochs=20, lr=1e-2, seed=0, patience=8, batch_size=16)
    assert again.layer_weights == weights


def test_probe_on_shuffled_labels_stays_at_chance(tone_features):
    (tr, _), (va, _), (te, _) = tone_features["train"], tone_features["val"], tone_features["test"]
    gen = torch.Generator().manual_seed(9)
    shuffled = [torch.randint(0, 4, (len(s),), generator=gen).tolist() for s in (tr, va, te)]
    probe = train_probe(tr, shuffled[0], va, shuffled[1], task="utterance", hidden=32, epochs=30, lr=1e-2, patience=5)
    assert isinstance(probe.model, UtteranceClassifier)
    assert evaluate_probe(probe, te, shuffled[2])["accuracy"] < 0.45  # chance is 0.25


def test_ctc_probe_learns_a_sequence_task():
    upstream = FakeUpstream()
    (tr_w, tr_y), (va_w, va_y), (te_w, te_y) = sequence_set(80, 0), sequence_set(30, 1), sequence_set(40, 2)
    tr, va, te = (extract_features(upstream, w) for w in (tr_w, va_w, te_w))
    probe = train_probe(tr, tr_y, va, va_y, task="ctc", hidden=32, epochs=25, lr=1e-2, patience=8, batch_size=16)
    assert isinstance(probe.model, CTCProbe) and probe.num_classes == 5
    result = evaluate_probe(probe, te, te_y)
    # Chance (a random symbol per segment) has an error rate around 0.75.
    assert result["n"] == 40 and result["error_rate"] < 0.2


def test_greedy_decode_merges_repeats_and_drops_blanks():
    path = torch.tensor([[1, 1, 0, 1, 2, 2, 0, 0, 3]])
    log_probs = torch.nn.functional.one_hot(path, 4).float().log()
    assert CTCProbe.greedy_decode(log_probs, torch.tensor([9])) == [[1, 1, 2, 3]]
    assert CTCProbe.greedy_decode(log_probs, torch.tensor([5])) == [[1, 1, 2]]


def test_train_probe_rejects_bad_input(tone_features):
    tr, tr_y = tone_features["train"]
    with pytest.raises(ConfigError, match="epoch"):
        train_probe(tr, tr_y, tr, tr_y, task="utterance", epoch=3)
    with pytest.raises(ValueError, match="labels for"):
        train_probe(tr, tr_y[:-1], tr, tr_y, task="utterance")
    with pytest.raises(ValueError, match="CTC labels"):
        train_probe(tr, [[0]] * len(tr), tr, [[1]] * len(tr), task="ctc")
    with pytest.raises(ValueError, match="num_classes"):
        train_probe(tr, tr_y, tr, tr_y, task="utterance", num_classes=2)


def test_extract_features_restores_mode_and_rejects_fp16_overflow():
    class Huge(FakeUpstream):
        def extract(self, wavs: Tensor, lengths: Tensor) -> list[Tensor]:
            assert not self.training  # extraction runs in eval mode
            return [torch.full((wavs.shape[0], 3, 2), 1e6)]

    upstream = Huge().train()
    with pytest.raises(ValueError, match="float16 range"):
        extract_features(upstream, [torch.zeros(1000)])
    assert upstream.training


def test_utterance_probes_pool_frames_once_with_the_same_logits():
    from robustdistiller.evaluate.heads import UtteranceClassifier
    from robustdistiller.evaluate.probe_tasks import probe_task

    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(3, t, 8, generator=gen).half() for t in (5, 1, 12, 7)]
    task = probe_task("utterance")
    condensed = task.condense(feats, layer_norm=False)
    assert [tuple(f.shape) for f in condensed] == [(3, 1, 8)] * 4
    assert task.condense(feats, layer_norm=True) is feats  # a per-frame norm does not commute with pooling
    torch.manual_seed(0)
    head = UtteranceClassifier(3, 8, 4)
    head.featurizer.weights.data = torch.tensor([0.3, -1.0, 2.0])
    for f, c in zip(feats, condensed):
        full = head(f.float().unsqueeze(0), torch.tensor([f.shape[1]]))
        pooled = head(c.unsqueeze(0), torch.tensor([1]))
        torch.testing.assert_close(pooled, full, rtol=1e-5, atol=1e-6)
