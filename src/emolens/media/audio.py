"""Audio: any audio file, or a video's sound track, as 16 kHz float32 mono (PyAV)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from emolens.media.errors import DEFAULT_MAX_VIDEO_PIXELS, MediaError

AUDIO_RATE = 16000


def load_audio(path: str | os.PathLike, sr: int = AUDIO_RATE) -> np.ndarray:
    """Decode any audio file, or the audio track of a video, as float32 mono at ``sr`` Hz.

    Uses PyAV (FFmpeg): wav, flac, mp3, ogg/opus, m4a/aac, and the first audio stream of
    mp4/mkv/webm/flv/avi/mov... Channels are averaged, the signal is resampled with
    libswresample, and samples are in -1..1. Raises :class:`MediaError` for a missing,
    empty or corrupt file and for a file without an audio stream (e.g. a silent video).
    """
    import av

    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: file not found")
    if path.is_dir():
        raise MediaError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: file is empty (0 bytes)")
    try:  # FFmpeg decodes a video frame while probing: bound its size (a huge one is never decoded)
        container = av.open(str(path), options={"max_pixels": str(DEFAULT_MAX_VIDEO_PIXELS)})
    except (av.FFmpegError, OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise MediaError(f"{path}: not a readable audio/video file ({reason})") from None
    chunks: list[np.ndarray] = []
    with container:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams if s.type in ("video", "subtitle", "data")})
            what = f" (it has only {', '.join(kinds)} streams)" if kinds else ""
            raise MediaError(f"{path}: no audio stream{what}")
        stream = container.streams.audio[0]
        decoder = _audio_decoder(stream)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        try:
            for packet in container.demux(stream):
                for frame in decoder.decode(packet):
                    frame.pts = None  # resample by sample count; ignore timestamp gaps
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except (av.FFmpegError, ValueError) as exc:
            if not chunks:  # keep what decoded before an error at the end of a damaged file
                reason = getattr(exc, "strerror", None) or str(exc)
                raise MediaError(f"{path}: cannot decode the audio stream ({reason})") from None
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if audio.size == 0:
        raise MediaError(f"{path}: the audio stream holds no samples")
    return np.clip(audio, -1.0, 1.0)


def _audio_decoder(stream):  # noqa: ANN001, ANN202
    """The stream's decoder; Opus goes through libopus when PyAV has it, because FFmpeg's
    native Opus decoder produces loud bursts on some files (e.g. RAVDESS Actor_16/03-01-05-01-01-01-16)."""
    import av

    ctx = stream.codec_context
    if ctx.name == "opus":
        try:
            lib = av.codec.CodecContext.create("libopus", "r")
            lib.extradata = ctx.extradata
            return lib
        except (av.FFmpegError, ValueError):
            pass
    return ctx
