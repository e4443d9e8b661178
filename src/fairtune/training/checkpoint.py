"""Checkpoints that let a killed run end with exactly the weights of an uninterrupted one.

A checkpoint holds the trained weights (safetensors), the optimizer and scheduler state, each
process's torch RNG state (dropout masks), the adaptive weights, what fairness objectives train
themselves (the adversary's probe) and the position in the data.
It is written to a temporary directory and renamed into place, and ``latest.json`` is replaced
atomically after it, so a SIGKILL at any moment leaves the previous checkpoint intact. Only files
this run wrote are read back, with ``torch.load(weights_only=True)``: no arbitrary unpickling.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairtune.io import write_json

LATEST = "latest.json"


@dataclass
class TrainState:
    step: int = 0        # optimizer steps done
    epoch: int = 0
    batch: int = 0       # micro-batches done in this epoch (on this process)
    tokens: int = 0
    rng: Any = None      # RNG states (rng_states()) at the start of the current step


class Checkpointer:
    def __init__(self, directory: Path, accelerator: Any, keep: int = 1):
        self.directory, self.accelerator, self.keep = Path(directory), accelerator, keep

    def save(self, state: TrainState, model: Any, method: Any, optimizer: Any, scheduler: Any,
             adaptive: list, objectives: list = (), *, interrupted: bool = False) -> Path:
        import torch
        from safetensors.torch import save_file

        acc = self.accelerator
        name = f"step-{state.step:07d}"
        tmp = self.directory / f".{name}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        # After Ctrl-C mid-step, the state at that step's start is what a resumed run needs.
        rng = state.rng if interrupted and state.rng is not None else rng_states()
        save_file(rng, str(tmp / f"rng-{acc.process_index}.safetensors"))
        acc.wait_for_everyone()
        if acc.is_main_process:
            weights = {n: p.detach().contiguous() for n, p in method.trainable(model).items()}
            save_file(weights, str(tmp / "trainable.safetensors"))
            extra = {f"{o.name}.{k}": v for o in objectives for k, v in o.state_tensors().items()}
            if extra:   # what objectives train themselves (the adversary's probe)
                save_file(extra, str(tmp / "objectives.safetensors"))
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                       tmp / "optimizer.pt")
            meta = {"step": state.step, "epoch": state.epoch, "batch": state.batch, "tokens": state.tokens,
                    "adaptive": [a.state() for a in adaptive], "processes": acc.num_processes}
            (tmp / "state.json").write_text(json.dumps(meta))
            final = self.directory / name
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            write_json(self.directory / LATEST, {"checkpoint": name})
            for old in sorted(self.directory.glob("step-*"))[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return self.directory / name

    def load(self, model: Any, method: Any, optimizer: Any, scheduler: Any, adaptive: list,
             objectives: list = ()) -> TrainState | None:
        import torch
        from safetensors.torch import load_file

        from fairtune.errors import FairtuneError

        pointer = self.directory / LATEST
        if not pointer.exists():
            return None
        directory = self.directory / json.loads(pointer.read_text())["checkpoint"]
        meta = json.loads((directory / "state.json").read_text())
        if meta["processes"] != self.accelerator.num_processes:
            raise FairtuneError(f"{directory}: saved by {meta['processes']} process(es), resumed with "
                                f"{self.accelerator.num_processes}; resume with the same number")
        weights = load_file(str(directory / "trainable.safetensors"))
        params = method.trainable(model)
        if set(weights) != set(params):
            raise FairtuneError(f"{directory}: checkpoint weights do not match this run's method and model "
                                "(use a new --out or delete the checkpoints)")
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(weights[name])
        states = torch.load(directory / "optimizer.pt", weights_only=True)
        optimizer.load_state_dict(states["optimizer"])
        scheduler.load_state_dict(states["scheduler"])
        for controller, saved in zip(adaptive, meta["adaptive"]):
            controller.load_state(saved)
        if (directory / "objectives.safetensors").exists():
            extra = load_file(str(directory / "objectives.safetensors"))
            for objective in objectives:
                prefix = f"{objective.name}."
                mine = {k[len(prefix):]: v for k, v in extra.items() if k.startswith(prefix)}
                if mine:
                    objective.load_state_tensors(mine)
        restore_rng(load_file(str(directory / f"rng-{self.accelerator.process_index}.safetensors")))
        return TrainState(meta["step"], meta["epoch"], meta["batch"], meta["tokens"])

    def clear(self) -> None:
        """A finished run needs no checkpoints."""
        shutil.rmtree(self.directory, ignore_errors=True)


def rng_states() -> dict[str, Any]:
    """The RNG states that dropout draws from: the CPU generator, and on a GPU the current
    device's generator too (a resumed GPU run otherwise draws other dropout masks)."""
    import torch

    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def restore_rng(states: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])
