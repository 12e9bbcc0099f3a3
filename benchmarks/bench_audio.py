"""Real-time factor of ``emolens audio`` on long audio.

Builds a long recording (default 10 min) by concatenating RAVDESS files of the held-out actors
(23, 24) with their natural pauses plus 1-3 s gaps of low noise, writes it as a 16 kHz WAV in a
temporary folder, then times

* the CLI end to end (``emolens audio FILE --json OUT``: process start, model loading,
  decoding, VAD, features, model), and
* each stage in-process: decoding, VAD, emotion model (features + ONNX).

RTF = processing seconds / audio seconds. Results go to ``benchmarks/results/bench_audio.json``.

    python benchmarks/bench_audio.py [--minutes 10] [--data ../shared/data/ravdess_speech]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def make_long_audio(data: Path, minutes: float, seed: int = 0) -> np.ndarray:
    """Concatenated RAVDESS utterances (actors 23 and 24) with noisy gaps, 16 kHz float32."""
    from emolens.media import load_audio

    rng = np.random.default_rng(seed)
    files = sorted(data.glob("Actor_2[34]/*.ogg"))
    if not files:
        raise SystemExit(f"no RAVDESS files under {data}")
    parts, total, target = [], 0, int(minutes * 60 * 16000)
    while total < target:
        a = load_audio(files[rng.integers(len(files))])
        gap = (rng.standard_normal(int(rng.uniform(1, 3) * 16000)) * 1e-3).astype(np.float32)
        parts += [a, gap]
        total += len(a) + len(gap)
    audio = np.concatenate(parts)[:target]
    return audio + (rng.standard_normal(len(audio)) * 3e-4).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, sr: int = 16000) -> None:
    """16-bit PCM mono WAV."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


def main() -> None:
    """Run the benchmark and print/write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ravdess_speech")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_audio.json")
    args = ap.parse_args()

    from emolens.media import load_audio
    from emolens.voice import AudioAnalyzer

    audio = make_long_audio(args.data, args.minutes)
    seconds = len(audio) / 16000
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "long.wav"
        write_wav(wav, audio)
        out = Path(tmp) / "long.json"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "emolens.cli", "audio", str(wav), "--json", str(out), "-q"],
                              capture_output=True, text=True)
        cli_s = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        n_segments = len(json.loads(out.read_text())[0]["segments"])

        analyzer = AudioAnalyzer()
        t0 = time.perf_counter()
        decoded = load_audio(wav)
        decode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        spans = analyzer.segments(decoded)
        vad_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        clips = [decoded[int(a * 16000): int(b * 16000)] for a, b in spans]
        analyzer.model.predict_segments(clips)
        model_s = time.perf_counter() - t0

    result = {
        "audio_seconds": round(seconds, 1),
        "segments": n_segments,
        "vad": analyzer.vad.name if analyzer.vad else "none",
        "cli_seconds": round(cli_s, 2),
        "rtf_cli_end_to_end": round(cli_s / seconds, 4),
        "rtf_decode": round(decode_s / seconds, 4),
        "rtf_vad": round(vad_s / seconds, 4),
        "rtf_emotion_model": round(model_s / seconds, 4),
        "rtf_in_process": round((decode_s + vad_s + model_s) / seconds, 4),
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
