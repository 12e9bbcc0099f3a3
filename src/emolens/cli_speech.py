"""``emolens`` commands for the speech pipeline (registered by :mod:`emolens.cli`).

* ``emolens audio PATH... [--json OUT]``: emotion of each recording (audio file or a video's
  audio track), with a VAD-based timeline of segments;
* ``emolens train speech --data DIR --out DIR``: speaker-independent cross-validation, the MFCC
  baseline, and the final ONNX model (``--model functionals``: the multi-corpus recipe on every
  ``<corpus>_speech`` folder under ``--data``, with both generalisation protocols);
* ``emolens evaluate speech --data DIR``: metrics of an ONNX speech model on labelled audio;
  ``--protocol speakers|corpora`` measures generalisation instead (speaker-independent CV within
  each corpus, leave-one-corpus-out), training the multi-corpus recipe on every fold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from emolens.cli_options import DeviceOption, fail

MOOD_HELP = ("functionals: mood-aware per-speaker statistics: the share (0-1) of each segment's estimated emotion "
             "effect (class effects weighted by the cold-start, then the model's own posterior) taken out before "
             "the speaker's statistics, so a person heard in one mood only keeps it; 0: off.")


def _audio_table(results: list, timeline: bool) -> str:
    lines = [f"{'file':<40} {'duration':>8} {'speech':>7} {'label':<9} {'prob':>5}  segments"]
    for r in results:
        name = Path(r.path).name if r.path else "<array>"
        if r.error:
            lines.append(f"{name:<40}  ERROR: {r.error}")
            continue
        if r.label is None:
            lines.append(f"{name:<40} {r.duration_s:>7.1f}s {0:>6.1f}s  no speech found")
            continue
        lines.append(f"{name:<40} {r.duration_s:>7.1f}s {r.speech_s:>6.1f}s {r.label:<9} {r.probs[r.label]:>5.2f}  "
                     f"{len(r.segments)}")
        if timeline:
            for s in r.segments:
                lines.append(f"    {s.start_s:>8.2f}-{s.end_s:<8.2f} {s.label:<9} {s.probs[s.label]:.2f}")
    return "\n".join(lines)


def audio(
    paths: Annotated[list[Path], typer.Argument(help="Audio or video files, or folders (walked recursively).")],
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write results as JSON here.")] = None,
    vad: Annotated[str, typer.Option(help="Voice activity detection: auto (Silero if installed, else energy), "
                                          "silero, energy or none (whole file is one segment).")] = "auto",
    max_segment: Annotated[float, typer.Option(help="Speech regions longer than this (s) are cut into "
                                                    "pieces of one model window (3 s).", min=0.0)] = 4.0,
    threshold: Annotated[float, typer.Option(help="VAD speech probability threshold.", min=0.0, max=1.0)] = 0.5,
    model: Annotated[Optional[Path], typer.Option(help="ONNX speech model (default: the shipped one).")] = None,
    threads: Annotated[int, typer.Option(help="onnxruntime threads for the emotion model (0: all cores).",
                                               min=0)] = 0,
    timeline: Annotated[bool, typer.Option("--timeline", "-t", help="Print every segment.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not print the table.")] = False,
    device: DeviceOption = "cpu",
) -> None:
    """Recognise the emotion in speech: one label per file plus a timeline of speech segments."""
    from emolens.outputs import write_json
    from emolens.voice import AudioAnalyzer, iter_audio_paths

    files = iter_audio_paths(paths)
    if not files:
        fail("no audio or video files found in the given paths")
    try:
        analyzer = AudioAnalyzer(model, vad=vad, threads=threads or None, threshold=threshold,
                                 max_segment_s=max_segment, device=device)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    results = []
    for path in files:
        try:
            result = analyzer.analyze_file(path)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
            from emolens.voice import AudioResult

            result = AudioResult(str(path), error=f"{path}: {type(exc).__name__}: {exc}")
        results.append(result)
        if json_out:  # rewritten after every file: nothing computed is lost on a crash or Ctrl-C
            write_json([r.to_dict() for r in results], json_out)
    if not quiet:
        typer.echo(_audio_table(results, timeline))
    n_err = sum(r.error is not None for r in results)
    typer.echo(f"{len(results)} file(s), {sum(len(r.segments) for r in results)} segment(s), {n_err} error(s)",
               err=True)
    if json_out:
        typer.echo(f"wrote {json_out}", err=True)
    if n_err == len(results):
        raise typer.Exit(1)


def _protocol(data: Path, protocol: str, corpora: str, copies: int, norm: str, hidden: int, epochs: int,
              drop: str, json_out: Optional[Path], encoder: bool = True, seeds: int = 1,
              adversary: float = 0.0, states: bool = False, mood: float = 0.0, cold_start: bool = True,
              logits_out: Optional[Path] = None) -> None:
    """``evaluate speech --protocol speakers|corpora``."""
    try:
        from emolens.train.speech_multi import run_protocol
        from emolens.train.speech_norm import SHRUNK_NORMS
        from emolens.train.speech_recipe import MultiConfig
        from emolens.train.speech_report import confusions, save_json, strip_logits, table
    except ImportError as exc:
        fail(f"the generalisation protocols train models and need PyTorch: pip install 'emolens[train]' ({exc})")
    try:
        cfg = MultiConfig(copies=copies, norm=norm, hidden=hidden, epochs=epochs,
                          prior=8.0 if norm in SHRUNK_NORMS else 0.0,
                          encoder=encoder, seeds=seeds, adversary=adversary, states=states, mood=mood)
    except ValueError as exc:
        fail(str(exc))
    chosen = [c.strip() for c in corpora.split(",") if c.strip()] or None
    try:
        result = run_protocol(data, protocol, cfg, drop, chosen, cold_start=cold_start, logits_out=logits_out)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        fail(str(exc))
    typer.echo(table(result))
    typer.echo("")
    typer.echo(confusions(result))
    if json_out:
        save_json(strip_logits(result), json_out)
        typer.echo(f"wrote {json_out}", err=True)
    if logits_out:
        typer.echo(f"wrote {logits_out}", err=True)


def evaluate_speech(
    data: Annotated[Path, typer.Option(help="RAVDESS folder (Actor_XX/03-01-...), root/<label>/*.wav or a folder "
                                            "with manifest.csv (file, speaker, emotion); with "
                                            "--protocol: the folder holding <corpus>_speech folders.")],
    protocol: Annotated[str, typer.Option(help="model: score the ONNX model on --data; speakers: speaker-"
                                               "independent CV within each corpus (multi-corpus model per fold); "
                                               "corpora: leave-one-corpus-out on the shared classes.")] = "model",
    corpora: Annotated[str, typer.Option(help="--protocol: corpora to test (comma list; default all).")] = "",
    copies: Annotated[int, typer.Option(help="--protocol: augmented copies per training file.")] = 2,
    norm: Annotated[str, typer.Option(help="--protocol: feature normalisation: speaker, online (speaker + simulated "
                                           "online accumulation, prior 8), first (every file as its speaker's first "
                                           "utterance: the cold-start model), corpus, global.")] = "online",
    hidden: Annotated[int, typer.Option(help="--protocol: MLP hidden units (0: linear).")] = 128,
    epochs: Annotated[int, typer.Option(help="--protocol: full-batch training epochs.")] = 150,
    drop: Annotated[str, typer.Option(help="--protocol: functionals to leave out (name prefixes, |-separated).")]
    = "",
    encoder: Annotated[bool, typer.Option(help="--protocol: add the speaker-encoder embeddings to the functionals.")]
    = True,
    states: Annotated[bool, typer.Option(help="--protocol: also the speaker encoder's frame-level states (mean "
                                              "and std over time; needs --encoder).")] = False,
    seeds: Annotated[int, typer.Option(help="--protocol: networks per model (seeds merged, logits averaged).",
                                       min=1)] = 1,
    adversary: Annotated[float, typer.Option(help="--protocol: weight of the corpus adversary (gradient reversal "
                                                  "on the hidden layer; 0: off).", min=0.0)] = 0.0,
    mood: Annotated[float, typer.Option(help=MOOD_HELP.replace("functionals", "--protocol"), min=0.0, max=1.0)]
    = 0.0,
    cold_start: Annotated[bool, typer.Option(help="--protocol, per-speaker recipes: also train the cold-start "
                                                  "partner on each fold and report the two networks mixed as the "
                                                  "pipeline mixes them.")] = True,
    model: Annotated[Optional[Path], typer.Option(help="ONNX model (default: the shipped one).")] = None,
    speakers: Annotated[str, typer.Option(help="Speakers to evaluate: 'heldout' (the model's held-out speakers, "
                                               "from its JSON), 'all', or a list like 23,24.")] = "heldout",
    stats: Annotated[str, typer.Option(help="Per-speaker feature statistics: full (each file normalised with all of "
                                            "its speaker's files, no labels used), online (only the files before it, "
                                            "in name order, which a folder sorted by emotion biases), none (every "
                                            "file scored as a new voice).")] = "full",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write metrics JSON here.")] = None,
    logits_out: Annotated[Optional[Path], typer.Option("--logits", help="--protocol: write the held-out logits "
                                                       "(npz, with labels, corpora, speakers, paths) here.")] = None,
    confusion_png: Annotated[Optional[Path], typer.Option("--confusion", help="Write the confusion matrix PNG here.")]
    = None,
    device: DeviceOption = "cpu",
) -> None:
    """Accuracy, macro-F1, per-class scores and confusion matrix of a speech model on labelled audio,
    or (``--protocol``) how well the multi-corpus recipe generalises to unseen speakers / corpora."""
    import numpy as np

    if protocol != "model":
        if protocol not in ("speakers", "corpora"):
            fail(f"unknown protocol {protocol!r} (model, speakers, corpora)")
        if not data.is_dir():
            fail(f"{data}: not a folder")
        _protocol(data, protocol, corpora, copies, norm, hidden, epochs, drop, json_out, encoder, seeds, adversary,
                  states, mood, cold_start, logits_out)
        return

    from emolens.metrics import classification_report, format_report, plot_confusion
    from emolens.outputs import write_json
    from emolens.voice import STATS_MODES, SpeechEmotionModel, load_speech_data, score_files

    if stats not in STATS_MODES:
        fail(f"unknown --stats {stats!r} ({', '.join(STATS_MODES)})")
    if not data.exists():
        fail(f"{data}: not found")
    try:
        dataset = load_speech_data(data)
        net = SpeechEmotionModel(model, device=device)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    if speakers == "heldout":
        chosen = net.meta.get("held_out_speakers") or []
        if not chosen:
            typer.echo("note: the model lists no held-out speakers; evaluating on all files", err=True)
    elif speakers == "all":
        chosen = []
    else:
        chosen = [s.strip().zfill(2) if s.strip().isdigit() else s.strip() for s in speakers.split(",") if s.strip()]
    if chosen:
        dataset = dataset.subset(np.isin(dataset.speakers, chosen))
        if len(dataset) == 0:
            fail(f"no files from speakers {','.join(chosen)} in {data}")
    probs_arr, problems = score_files(net, [it.path for it in dataset.items], [it.speaker for it in dataset.items],
                                      stats, progress=True)
    for msg in problems:
        typer.echo(f"skipped: {msg}", err=True)
    errors = len(problems)
    ok = ~np.isnan(probs_arr).any(axis=1)
    if not ok.any():
        fail("no file could be decoded")
    present = sorted(set(dataset.labels.tolist()))  # scored on the classes the data has, as in the protocols
    classes = [dataset.classes[i] for i in present]
    if len(classes) < len(dataset.classes):
        typer.echo(f"note: scored on the {len(classes)} classes the data has: {', '.join(classes)}", err=True)
    missing = [c for c in classes if c not in net.labels]
    if missing:
        fail(f"the model has no class {', '.join(missing)} (it knows {', '.join(net.labels)})")
    pred = probs_arr[ok][:, [net.labels.index(c) for c in classes]].argmax(1)
    truth = np.searchsorted(np.asarray(present), dataset.labels[ok])
    report = classification_report(truth, pred, classes)
    report["model"] = str(net.path)
    report["speakers"] = sorted(set(dataset.speakers.tolist()))
    report["errors"] = errors
    report["stats"] = stats
    typer.echo(format_report(report))
    if json_out:
        write_json(report, json_out)
        typer.echo(f"wrote {json_out}", err=True)
    png = confusion_png or (json_out.with_suffix(".confusion.png") if json_out else None)
    if png:
        plot_confusion(report, png, title=f"speech, speakers {','.join(report['speakers'])}")
        typer.echo(f"wrote {png}", err=True)


def train_speech_cmd(
    data: Annotated[Path, typer.Option(help="RAVDESS folder (Actor_XX/03-01-...) or root/<label>/*.wav.")],
    out: Annotated[Path, typer.Option(help="Output folder: CV results, curves, confusion matrices, ONNX.")],
    model: Annotated[str, typer.Option(help="cnn (log-mel 2D CNN + attentive pooling), mfcc (baseline), or "
                                            "functionals (multi-corpus: --data is the folder of <corpus>_speech "
                                            "folders; the shipped recipe).")] = "cnn",
    copies: Annotated[int, typer.Option(help="functionals: augmented copies per file.")] = 2,
    norm: Annotated[str, typer.Option(help="functionals: normalisation (speaker, online: per speaker with the "
                                           "online accumulation simulated on the augmented copies, first: every "
                                           "file as its speaker's first utterance (the cold-start model), corpus, "
                                           "global).")]
    = "online",
    prior: Annotated[float, typer.Option(help="functionals: pseudo-observations of the global statistics in the "
                                             "per-speaker normalisation (the same at inference).")] = 8.0,
    hidden: Annotated[int, typer.Option(help="functionals: MLP hidden units (0: linear).")] = 128,
    drop: Annotated[str, typer.Option(help="functionals: features left out (name prefixes, |-separated; '' none).")]
    = "",
    encoder: Annotated[bool, typer.Option(help="functionals: add the speaker-encoder embeddings (GE2E, shipped "
                                               "as models/speech_encoder.onnx).")] = True,
    states: Annotated[bool, typer.Option(help="functionals: also the speaker encoder's frame-level states (mean "
                                              "and std over time of its top LSTM layer; needs --encoder).")] = False,
    seeds: Annotated[int, typer.Option(help="functionals: networks trained with seeds --seed, --seed+1, ... and "
                                            "merged into one model (logits averaged).", min=1)] = 1,
    adversary: Annotated[float, typer.Option(help="functionals: weight of the corpus adversary (a corpus classifier "
                                                  "on the hidden layer, its gradient reversed; 0: off).", min=0.0)]
    = 0.0,
    mood: Annotated[float, typer.Option(help=MOOD_HELP, min=0.0, max=1.0)] = 0.0,
    folds: Annotated[int, typer.Option(help="Speaker-independent cross-validation folds.")] = 6,
    cv: Annotated[bool, typer.Option(help="Run the cross-validation.")] = True,
    baseline: Annotated[bool, typer.Option(help="Also cross-validate the MFCC + 1D-CNN baseline.")] = True,
    final: Annotated[bool, typer.Option(help="Train and export the final model.")] = True,
    holdout: Annotated[str, typer.Option(help="Speakers kept out of the final model (comma list, '' for none).")]
    = "23,24",
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 45,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, one-cycle cosine).")] = 3e-3,
    mixup: Annotated[float, typer.Option(help="Mixup alpha (0: off).")] = 0.0,
    threads: Annotated[int, typer.Option(help="Torch threads.")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    max_files: Annotated[int, typer.Option(help="Use a random subset of this many files (0: all; for smoke tests).")]
    = 0,
) -> None:
    """Cross-validate speaker-independently, then train and export the speech-emotion model."""
    if model == "functionals":
        try:
            from emolens.train.speech_multi import train_final as train_functionals
            from emolens.train.speech_norm import SHRUNK_NORMS
            from emolens.train.speech_recipe import MultiConfig
            from emolens.train.speech_report import table
        except ImportError as exc:
            fail(f"training needs PyTorch: pip install 'emolens[train]' ({exc})")
        try:
            cfg = MultiConfig(copies=copies, norm=norm, hidden=hidden, epochs=epochs if epochs != 45 else 150,
                              seed=seed, threads=threads, prior=prior if norm in SHRUNK_NORMS else 0.0,
                              encoder=encoder, states=states, seeds=seeds, adversary=adversary, mood=mood)
        except ValueError as exc:
            fail(str(exc))
        protocols = ("corpora", "speakers") if cv else ("corpora",)
        try:
            res = train_functionals(data, out, cfg, drop=drop, protocols=protocols)
        except (ValueError, FileNotFoundError) as exc:
            fail(str(exc))
        for proto in protocols:
            typer.echo(f"\n{proto}:\n" + table(res[proto]))
        typer.echo(f"wrote {out}/speech_emotion.onnx (+ .json, corpora.json{', speakers.json' if cv else ''})")
        return
    try:
        from emolens.train.speech import SpeechTrainConfig, train_speech
    except ImportError as exc:
        fail(f"training needs PyTorch: pip install 'emolens[train]' ({exc})")
    if not data.exists():
        fail(f"{data}: not found")
    cfg = SpeechTrainConfig(data=str(data), out=str(out), model=model, folds=folds, cv=cv, baseline=baseline,
                            final=final, holdout=holdout, epochs=epochs, batch_size=batch_size, lr=lr, mixup=mixup,
                            threads=threads, seed=seed, max_files=max_files)
    try:
        train_speech(cfg)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))


def register(app: typer.Typer, train_app: typer.Typer, evaluate_app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.command("audio")(audio)
    train_app.command("speech")(train_speech_cmd)
    evaluate_app.command("speech")(evaluate_speech)
