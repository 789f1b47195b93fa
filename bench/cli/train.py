"""`connbench train`: train one model on one task and print what it learned."""

from __future__ import annotations

import json
import sys

from connbench.cli.args import (
    device,
    finite_positive_float,
    non_negative_int,
    positive_int,
    thread_count,
)
from connbench.measure.training import TrainResult, train


def add_arguments(parser) -> None:
    """Arguments of `connbench train`."""
    parser.add_argument("--task", required=True, help="task spec, e.g. copy:length=100")
    parser.add_argument("--structure", "--connectivity", dest="structure", default="full",
                        help="structure spec (default full)")
    parser.add_argument(
        "--cell", default=None, help="rnn_tanh (default), rnn_relu, rnn_sigmoid, gru, lstm"
    )
    parser.add_argument("--hidden", type=positive_int, default=None,
                        help="hidden units (or from a preset)")
    parser.add_argument("--layers", type=positive_int, default=None,
                        help="recurrent layers (default 1)")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="training steps (task default)")
    parser.add_argument("--lr", type=finite_positive_float, default=None,
                        help="learning rate (task default)")
    parser.add_argument("--batch", type=positive_int, default=None,
                        help="batch size (task default)")
    parser.add_argument("--optimizer", default=None, help="sgd, adam or rmsprop (task default)")
    parser.add_argument("--preset", default=None, help="a task preset, e.g. trask")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed (default 0)")
    parser.add_argument("--max-time", type=finite_positive_float, default=None,
                        help="wall-clock budget, seconds")
    parser.add_argument("--threads", type=thread_count, default=None, help="torch intra-op threads")
    parser.add_argument(
        "--no-early-stop", action="store_true", help="train all steps even once solved"
    )
    parser.add_argument("--device", default="cpu", type=device, help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")


def _progress_line(step: int, total: int, loss: float, metrics: dict) -> None:
    shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    line = f"\rstep {step}/{total}  loss {loss:.4g}  {shown}   "
    print(line, end="", file=sys.stderr, flush=True)


def main(args) -> int:
    """Run `connbench train`; exit 0 unless the run failed."""
    import torch

    if args.hidden is not None:
        _check_memory(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = train(
        args.task,
        cell=args.cell,
        structure=args.structure,
        hidden=args.hidden,
        layers=args.layers,
        steps=args.steps,
        lr=args.lr,
        batch=args.batch,
        optimizer=args.optimizer,
        seed=args.seed,
        preset=args.preset,
        device=args.device,
        progress=_progress_line,
        max_time_s=args.max_time,
        stop_when_solved=not args.no_early_stop,
    )
    print(file=sys.stderr)  # end the carriage-return progress line
    if args.json:
        d = result.to_dict()
        keys = ("task", "structure", "cell", "hidden", "seed", "steps", "status", "solved",
                "steps_to_solve", "metrics", "chance", "params", "layers", "wall_time_s",
                "primary_metric", "higher_is_better", "stop_reason", "error", "config")
        print(json.dumps({k: d[k] for k in keys}))
    else:
        print(_summary(result))
    return 1 if result.status == "failed" else 0


def _check_memory(args) -> None:
    """Refuse a model that cannot fit before allocating it (the estimate in the message)."""
    from connbench import tasks
    from connbench.plan import resources
    from connbench.registry import SpecError

    if args.device != "cpu":
        return
    task = tasks.make(args.task)
    batch = args.batch or getattr(getattr(task, "defaults", None), "batch", None)
    cell = (args.cell or "rnn_tanh").partition(":")[0]
    need = resources.estimate_bytes(
        hidden=args.hidden, layers=args.layers or 1, gates=resources.CELL_GATES.get(cell, 4),
        inputs=int(task.input_size), outputs=int(task.output_size),
        seq_len=getattr(task, "seq_len", None), batch=batch)
    available = resources.available_memory()
    if available and need > available:
        raise SpecError(f"--hidden {args.hidden}: the model needs about "
                        f"{resources.human(need)} (estimate), more than the "
                        f"{resources.human(available)} available; use a smaller --hidden "
                        "or --batch")


def _summary(r: TrainResult) -> str:
    lines = [
        f"{r.task}  {r.cell} {r.structure} hidden {r.hidden}  seed {r.seed}",
        f"status {r.status} ({r.stop_reason}) after {r.steps} steps, {r.wall_time_s:.1f} s"
        + (f"; solved at step {r.steps_to_solve}" if r.solved else "; not solved"),
    ]
    for name, value in r.metrics.items():
        chance = r.chance.get(name)
        shown = f"  {name} {value:.4f}"
        lines.append(shown + (f"  (chance {chance:.4f})" if chance is not None else ""))
    p = r.params
    lines.append(f"  params {p.get('total')} total, recurrent stored {p.get('recurrent_stored')}")
    if r.error:
        lines.append(f"  error: {r.error}")
    return "\n".join(lines)
