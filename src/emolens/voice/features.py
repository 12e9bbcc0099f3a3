"""Speech features: log-mel / MFCC frames for the CNN, and utterance-level acoustic functionals.

Pure numpy (no torch, no librosa). The functionals (:func:`functionals`) are an
eGeMAPS-style description of one utterance: pitch, voicing, harmonicity, loudness, spectral
balance and MFCC statistics, computed from the same 10 ms frames as the log-mel.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from emolens.media import AUDIO_RATE


@dataclass(frozen=True)
class FeatureParams:
    """Log-mel / MFCC parameters (stored in the model's JSON so inference matches training).

    25 ms Hann window, 10 ms hop, 64 Slaney mel bands 20 Hz..8 kHz, power in dB
    (floored at 80 dB below the utterance's peak), ``window_s`` seconds per classifier input.
    """

    sample_rate: int = AUDIO_RATE
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 64
    fmin: float = 20.0
    fmax: float = 8000.0
    top_db: float = 80.0
    n_mfcc: int = 40
    window_s: float = 3.0
    trim_db: float = 40.0

    @property
    def frames_per_second(self) -> float:
        """Feature frames per second of audio (100 at a 10 ms hop)."""
        return self.sample_rate / self.hop_length

    @property
    def window_frames(self) -> int:
        """Frames in one classifier window (300 for 3 s)."""
        return int(round(self.window_s * self.frames_per_second))


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    lin = m * (200.0 / 3)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log, lin)


@lru_cache(maxsize=8)
def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Slaney-style (area-normalised) triangular mel filters ``(n_mels, n_fft // 2 + 1)``,
    the same as ``librosa.filters.mel(htk=False, norm="slaney")``."""
    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    pts = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(pts)
    ramps = pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper)) * (2.0 / (pts[2:] - pts[:-2]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=4)
def _window(win_length: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)).astype(np.float32)


def mel_power(audio: np.ndarray, params: FeatureParams = FeatureParams()) -> np.ndarray:
    """Mel power spectrogram ``(frames, n_mels)`` (linear power), frame ``t`` centred at ``t * hop``."""
    p = params
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    x = np.pad(x, (p.win_length // 2, p.win_length // 2))
    if x.size < p.win_length:
        x = np.pad(x, (0, p.win_length - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, p.win_length)[:: p.hop_length]
    spec = np.abs(np.fft.rfft(frames * _window(p.win_length), n=p.n_fft, axis=1)) ** 2
    fb = mel_filterbank(p.sample_rate, p.n_fft, p.n_mels, p.fmin, p.fmax)
    return (spec.astype(np.float32) @ fb.T).astype(np.float32)


def power_to_db(power: np.ndarray, top_db: float | None = 80.0) -> np.ndarray:
    """``10 log10(power)``, floored at ``top_db`` below the peak (and at -100 dB)."""
    db = 10.0 * np.log10(np.maximum(power, 1e-10))
    if top_db is not None and db.size:
        db = np.maximum(db, db.max() - top_db)
    return db.astype(np.float32)


def log_mel(audio: np.ndarray, params: FeatureParams = FeatureParams()) -> np.ndarray:
    """Log-mel spectrogram in dB, ``float32 (frames, n_mels)``."""
    return power_to_db(mel_power(audio, params), params.top_db)


@lru_cache(maxsize=4)
def _dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    n = np.arange(n_in)
    k = np.arange(n_out)[:, None]
    m = np.cos(np.pi / n_in * (n + 0.5) * k) * np.sqrt(2.0 / n_in)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float32)


def deltas(x: np.ndarray, width: int = 9) -> np.ndarray:
    """Regression deltas along axis 0 (frames) over ``width`` frames, edges repeated."""
    n = width // 2
    pad = np.pad(x, ((n, n), (0, 0)), mode="edge")
    denom = 2 * sum(i * i for i in range(1, n + 1))
    out = np.zeros_like(x, dtype=np.float32)
    for i in range(1, n + 1):
        out += i * (pad[n + i: n + i + len(x)] - pad[n - i: n - i + len(x)])
    return out / denom


def mfcc_features(logmel_db: np.ndarray, n_mfcc: int = 40) -> np.ndarray:
    """MFCCs (DCT-II of the log-mel) with deltas and delta-deltas: ``(frames, 3 * n_mfcc)``."""
    c = logmel_db @ _dct_matrix(logmel_db.shape[1], n_mfcc).T
    d = deltas(c)
    return np.concatenate([c, d, deltas(d)], axis=1).astype(np.float32)


def trim_bounds(logmel_db: np.ndarray, trim_db: float = 40.0, margin: int = 10) -> tuple[int, int]:
    """``(start, end)`` frames of the part louder than ``trim_db`` below the loudest frame
    (leading and trailing silence removed, ``margin`` frames kept on each side)."""
    if len(logmel_db) == 0:
        return 0, 0
    energy = logmel_db.max(axis=1)
    loud = np.flatnonzero(energy > energy.max() - trim_db)
    if loud.size == 0:
        return 0, len(logmel_db)
    return max(0, int(loud[0]) - margin), min(len(logmel_db), int(loud[-1]) + 1 + margin)


def normalize(feats: np.ndarray) -> np.ndarray:
    """Per-utterance normalisation: zero mean, unit variance over the whole segment (one scalar
    mean/std, so the spectral shape is kept and only level and gain are removed)."""
    feats = np.asarray(feats, dtype=np.float32)
    if feats.size == 0:
        return feats
    return (feats - feats.mean()) / (feats.std() + 1e-5)


def fit_window(feats: np.ndarray, frames: int, offset: int | None = None) -> np.ndarray:
    """Pad (with zeros, the normalised mean) or crop ``(T, F)`` features to ``frames`` rows.

    A shorter segment is placed at ``offset`` (default: centred); a longer one is cut at
    ``offset`` (default: its centre).
    """
    t, f = feats.shape
    if t >= frames:
        start = (t - frames) // 2 if offset is None else int(np.clip(offset, 0, t - frames))
        return feats[start: start + frames]
    out = np.zeros((frames, f), dtype=np.float32)
    start = (frames - t) // 2 if offset is None else int(np.clip(offset, 0, frames - t))
    out[start: start + t] = feats
    return out


def windows(feats: np.ndarray, frames: int, hop: int | None = None) -> np.ndarray:
    """Cut normalised ``(T, F)`` features into ``(N, frames, F)`` windows with ``hop`` (default
    half a window); a segment no longer than one window gives one centred, padded window."""
    hop = hop or max(1, frames // 2)
    t = len(feats)
    if t <= frames:
        return fit_window(feats, frames)[None]
    n = int(np.ceil((t - frames) / hop)) + 1
    starts = np.linspace(0, t - frames, n).round().astype(int)
    return np.stack([feats[s: s + frames] for s in starts])


def eval_windows(x: np.ndarray, frames: int) -> np.ndarray:
    """Test-time windows of normalised ``(T, F)`` features: a segment shorter than a window gives
    3 placements (start, centre, end); a longer one half-overlapping windows."""
    if len(x) < frames:
        span = frames - len(x)
        return np.stack([fit_window(x, frames, o) for o in (0, span // 2, span)])
    return windows(x, frames)


def utterance_features(audio: np.ndarray, params: FeatureParams = FeatureParams(), trim: bool = True) -> np.ndarray:
    """Trimmed (optional) and normalised log-mel ``(T, n_mels)`` of one utterance."""
    db = log_mel(audio, params)
    if trim:
        s, e = trim_bounds(db, params.trim_db)
        db = db[s:e]
    return normalize(db)




# ----------------------------------------------------------------------------- functionals

#: Bump when :func:`functionals` changes (stored in the model JSON and the feature caches).
FUNCTIONALS_VERSION = 2
_STATS = ("mean", "std", "p10", "p50", "p90", "range")


@lru_cache(maxsize=4)
def _hann(n: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(n) + 0.5) / n)).astype(np.float64)


def pitch_track(audio: np.ndarray, sample_rate: int = AUDIO_RATE, hop: int = 160, win: int = 640,
                fmin: float = 60.0, fmax: float = 500.0) -> tuple[np.ndarray, np.ndarray]:
    """Autocorrelation pitch (Boersma's window-corrected normalised autocorrelation).

    Returns ``(f0_hz, strength)`` per 10 ms frame (frame ``t`` centred at ``t * hop``, the same
    frames as :func:`log_mel`); ``strength`` in [0, 1) is the normalised autocorrelation peak
    (the voicing / harmonicity measure).
    """
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    x = np.pad(x, (win // 2, win // 2))
    if x.size < win:
        x = np.pad(x, (0, win - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop]
    frames = (frames - frames.mean(axis=1, keepdims=True)) * _hann(win)
    n = 2 * win
    ac = np.fft.irfft(np.abs(np.fft.rfft(frames, n=n, axis=1)) ** 2, n=n, axis=1)[:, :win]
    wac = np.fft.irfft(np.abs(np.fft.rfft(_hann(win), n=n)) ** 2, n=n)[:win]
    ac = ac / np.maximum(ac[:, :1], 1e-12) / np.maximum(wac / wac[0], 1e-3)
    lo, hi = int(sample_rate // fmax), int(sample_rate // fmin)
    seg = np.minimum(ac[:, lo: hi + 1], 1.0)
    # the shortest lag whose peak is within 10 % of the best (the window correction inflates the
    # peaks at multiples of the period, which would otherwise give octave-down errors)
    peak = np.zeros_like(seg, dtype=bool)
    peak[:, 1:-1] = (seg[:, 1:-1] >= seg[:, :-2]) & (seg[:, 1:-1] >= seg[:, 2:])
    good = peak & (seg >= 0.9 * seg.max(axis=1, keepdims=True))
    k = np.where(good.any(axis=1), good.argmax(axis=1), seg.argmax(axis=1))
    strength = np.clip(seg[np.arange(len(seg)), k], 0.0, 0.999)
    # parabolic interpolation around the peak
    km, kp = np.clip(k - 1, 0, seg.shape[1] - 1), np.clip(k + 1, 0, seg.shape[1] - 1)
    a, b, c = seg[np.arange(len(seg)), km], seg[np.arange(len(seg)), k], seg[np.arange(len(seg)), kp]
    denom = a - 2 * b + c
    shift = np.where(np.abs(denom) > 1e-9, 0.5 * (a - c) / np.where(np.abs(denom) > 1e-9, denom, 1.0), 0.0)
    lag = lo + k + np.clip(shift, -0.5, 0.5)
    return (sample_rate / lag).astype(np.float32), strength.astype(np.float32)


def _stats(v: np.ndarray) -> list[float]:
    """mean, std, 10th/50th/90th percentile and 10-90 range of ``v`` (zeros when empty)."""
    if v.size == 0:
        return [0.0] * len(_STATS)
    p10, p50, p90 = np.percentile(v, [10, 50, 90])
    return [float(v.mean()), float(v.std()), float(p10), float(p50), float(p90), float(p90 - p10)]


def functional_names(n_mels: int = 64, n_mfcc: int = 20) -> list[str]:
    """Names of the :func:`functionals` dimensions, in order."""
    names = [f"mel{i}_{s}" for s in ("mean", "std") for i in range(n_mels)]
    names += [f"mfcc{i}_{s}" for s in ("mean", "std", "dstd") for i in range(n_mfcc)]
    names += [f"loudness_{s}" for s in _STATS] + ["loudness_dabs", "loudness_peak_rate"]
    names += [f"f0st_{s}" for s in _STATS] + ["f0st_dabs"]
    names += ["voiced_ratio", "voicing_mean", "voicing_std", "hnr_mean", "hnr_std"]
    names += [f"{d}_{s}" for d in ("centroid", "flux", "alpha_ratio", "hammarberg", "slope") for s in ("mean", "std")]
    return names


def functionals(audio: np.ndarray, params: FeatureParams = FeatureParams(), n_mfcc: int = 20,
                trim: bool = True) -> np.ndarray:
    """eGeMAPS-style functionals of one utterance (16 kHz mono float): ``float32 (D,)``.

    Low-level descriptors per 10 ms frame (log-mel bands, MFCC 0-19 and their deltas, loudness,
    F0 in semitones above 27.5 Hz and voicing strength from :func:`pitch_track`, HNR, mel
    centroid, spectral flux, alpha ratio (<1 kHz vs 1-5 kHz), Hammarberg index (peak 0-2 kHz vs
    2-5 kHz), spectral slope), summarised by means, standard deviations and percentiles over
    the utterance (F0 and HNR over voiced frames only). Silence before and after the speech is
    trimmed; no feature depends on the utterance's length. See :func:`functional_names`.
    """
    p = params
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    power = mel_power(audio, p)
    db = power_to_db(power, p.top_db)
    f0, strength = pitch_track(audio, p.sample_rate, p.hop_length)
    t = min(len(db), len(f0))
    db, power, f0, strength = db[:t], power[:t], f0[:t], strength[:t]
    if trim and t:
        s, e = trim_bounds(db, p.trim_db)
        db, power, f0, strength = db[s:e], power[s:e], f0[s:e], strength[s:e]
    if len(db) < 3:
        return np.zeros(len(functional_names(p.n_mels, n_mfcc)), dtype=np.float32)
    out: list[float] = []
    out += db.mean(0).tolist() + db.std(0).tolist()
    mf = db @ _dct_matrix(db.shape[1], n_mfcc).T
    out += mf.mean(0).tolist() + mf.std(0).tolist() + deltas(mf).std(0).tolist()
    loud = 10.0 * np.log10(power.sum(1) + 1e-10)
    out += _stats(loud) + [float(np.abs(np.diff(loud)).mean())]
    smooth = np.convolve(loud, np.ones(5) / 5, mode="same")
    peaks = (smooth[1:-1] > smooth[:-2]) & (smooth[1:-1] >= smooth[2:]) & (smooth[1:-1] > smooth.mean())
    out.append(float(peaks.sum()) / (len(loud) / p.frames_per_second))
    voiced = (strength > 0.5) & (loud > loud.max() - 35.0)
    semis = 12.0 * np.log2(np.maximum(f0[voiced], 1.0) / 27.5)
    out += _stats(semis) + [float(np.abs(np.diff(semis)).mean()) if semis.size > 1 else 0.0]
    hnr = 10.0 * np.log10(strength[voiced] / (1.0 - strength[voiced])) if voiced.any() else np.zeros(0)
    out += [float(voiced.mean()), float(strength[voiced].mean()) if voiced.any() else 0.0,
            float(strength[voiced].std()) if voiced.any() else 0.0,
            float(hnr.mean()) if hnr.size else 0.0, float(hnr.std()) if hnr.size else 0.0]
    centers = _mel_to_hz(np.linspace(_hz_to_mel(p.fmin), _hz_to_mel(p.fmax), p.n_mels + 2)[1:-1])
    pw = power + 1e-10
    centroid = (pw * np.arange(p.n_mels)).sum(1) / pw.sum(1)
    flux = np.concatenate([[0.0], np.sqrt(np.mean(np.diff(normalize(db), axis=0) ** 2, axis=1))])
    low, mid = centers < 1000, (centers >= 1000) & (centers < 5000)
    alpha = 10 * np.log10(pw[:, low].sum(1)) - 10 * np.log10(pw[:, mid].sum(1))
    hamm = db[:, centers < 2000].max(1) - db[:, (centers >= 2000) & (centers < 5000)].max(1)
    xb = np.arange(p.n_mels) - (p.n_mels - 1) / 2
    slope = (db - db.mean(1, keepdims=True)) @ xb / (xb @ xb)
    for d in (centroid, flux, alpha, hamm, slope):
        out += [float(np.mean(d)), float(np.std(d))]
    return np.nan_to_num(np.asarray(out, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)


# ----------------------------------------------------------------------------- augmentation


def augment_audio(audio: np.ndarray, rng: np.random.Generator, sample_rate: int = AUDIO_RATE) -> np.ndarray:
    """One random channel/room/speaker perturbation of 16 kHz audio (training only).

    Tempo+pitch (resampling by 0.9-1.1, p 0.5), room reverberation (synthetic exponentially
    decaying RIR, RT60 0.15-0.8 s, p 0.5), codec / channel (telephone band 300-3400 Hz or 8-bit
    mu-law, p 0.3), additive white/pink/brown noise (5-30 dB SNR, p 0.6) and gain (-12..+6 dB,
    clipped at full scale).
    """
    x = np.asarray(audio, dtype=np.float64).reshape(-1).copy()
    if x.size < 16:
        return x.astype(np.float32)
    if rng.random() < 0.5:
        f = rng.uniform(0.9, 1.1)
        x = np.interp(np.arange(0, len(x) - 1, f), np.arange(len(x)), x)
    if rng.random() < 0.5:
        rt60 = rng.uniform(0.15, 0.8)
        n = int(rt60 * sample_rate)
        rir = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
        rir[0] = 1.0 / rng.uniform(0.3, 1.0)
        rir /= np.sqrt((rir**2).sum())
        m = len(x) + n - 1
        size = 1 << (m - 1).bit_length()
        y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(rir, size), size)[: len(x)]
        x = y * np.sqrt((x**2).mean() / max((y**2).mean(), 1e-12))
    if rng.random() < 0.3:
        if rng.random() < 0.5:
            spec = np.fft.rfft(x)
            freqs = np.fft.rfftfreq(len(x), 1 / sample_rate)
            spec[(freqs < 300) | (freqs > 3400)] = 0
            x = np.fft.irfft(spec, len(x))
        else:
            mu = 255.0
            peak = max(np.abs(x).max(), 1e-6)
            y = np.sign(x / peak) * np.log1p(mu * np.abs(x / peak)) / np.log1p(mu)
            y = np.round(y * 127) / 127
            x = peak * np.sign(y) * ((1 + mu) ** np.abs(y) - 1) / mu
    if rng.random() < 0.6:
        color = rng.integers(0, 3)
        noise = rng.standard_normal(len(x))
        if color:
            spec = np.fft.rfft(noise)
            freqs = np.maximum(np.fft.rfftfreq(len(noise)), 1.0 / len(noise))
            spec /= freqs ** (0.5 * color)
            noise = np.fft.irfft(spec, len(noise))
        snr = rng.uniform(5, 30)
        level = np.sqrt((x**2).mean() / 10 ** (snr / 10) / max((noise**2).mean(), 1e-12))
        x = x + level * noise
    x = x * 10 ** (rng.uniform(-12, 6) / 20)
    return np.clip(x, -1.0, 1.0).astype(np.float32)
