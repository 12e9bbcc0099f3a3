"""Speech emotion recognition (numpy + onnxruntime; PyTorch is only needed to train).

The package is split by job; every public name is re-exported here, so
``from emolens.voice import AudioAnalyzer`` keeps working:

* :mod:`emolens.voice.features`: log-mel / MFCC frames, utterance functionals, augmentation;
* :mod:`emolens.voice.vad`: voice activity detection (Silero ONNX or energy) and segmentation;
* :mod:`emolens.voice.model`: the ONNX speech-emotion model;
* :mod:`emolens.voice.speakers`: per-speaker state (feature statistics, cold-start posteriors);
* :mod:`emolens.voice.analysis`: file -> segments -> timeline (:class:`AudioAnalyzer`);
* speech datasets live beside the face datasets in :mod:`emolens.datasets`.
"""

from __future__ import annotations

from emolens.datasets import (
    AUDIO_SUFFIXES,
    CREMA_NAME,
    RAVDESS_NAME,
    SPEECH_CORPORA,
    VIDEO_SUFFIXES,
    SpeechDataset,
    SpeechItem,
    load_emodb,
    load_ravdess,
    load_speech_corpora,
    load_speech_data,
    load_speech_folder,
    load_turev,
    load_urdu,
    parse_ravdess_name,
    speaker_folds,
)
from emolens.voice.analysis import (
    STATS_MODES,
    AudioAnalyzer,
    AudioResult,
    AudioSegment,
    analyze_audio,
    iter_audio_paths,
    score_files,
)
from emolens.voice.features import (
    FeatureParams,
    _dct_matrix,
    _hz_to_mel,
    _mel_to_hz,
    augment_audio,
    deltas,
    eval_windows,
    fit_window,
    functional_names,
    functionals,
    log_mel,
    mel_filterbank,
    mel_power,
    mfcc_features,
    normalize,
    pitch_track,
    power_to_db,
    trim_bounds,
    utterance_features,
    windows,
)
from emolens.voice.model import (
    DEFAULT_SPEECH_MODEL,
    MODELS_DIR,
    SpeechEmotionModel,
    _session,
    default_speech_model,
)
from emolens.voice.speakers import MoodHistory, SpeakerNormalizer, cold_share, one_mood_share, posterior_diversity
from emolens.voice.vad import EnergyVAD, SileroVAD, make_vad, silero_model_path, speech_regions, split_region

__all__ = [
    "AUDIO_SUFFIXES", "CREMA_NAME", "DEFAULT_SPEECH_MODEL", "MODELS_DIR", "RAVDESS_NAME", "SPEECH_CORPORA",
    "STATS_MODES", "VIDEO_SUFFIXES", "AudioAnalyzer", "AudioResult", "AudioSegment", "EnergyVAD", "FeatureParams",
    "MoodHistory", "SileroVAD", "SpeakerNormalizer", "SpeechDataset", "SpeechEmotionModel", "SpeechItem",
    "_dct_matrix", "_hz_to_mel", "_mel_to_hz", "_session", "analyze_audio", "augment_audio", "cold_share",
    "default_speech_model", "deltas", "eval_windows", "fit_window", "functional_names", "functionals",
    "iter_audio_paths", "load_emodb", "load_ravdess", "load_speech_corpora", "load_speech_data",
    "load_speech_folder", "load_turev", "load_urdu", "log_mel", "make_vad", "mel_filterbank", "mel_power",
    "mfcc_features", "normalize", "one_mood_share", "parse_ravdess_name", "pitch_track", "posterior_diversity",
    "power_to_db", "score_files", "silero_model_path", "speaker_folds", "speech_regions", "split_region",
    "trim_bounds", "utterance_features", "windows",
]
