"""PyTorch's own learning-rate (and momentum) sequences for virb's schedulers.

Usage: lr_schedules.py SPEC_JSON
SPEC_JSON: {"epochs": E, "steps_per_epoch": S, "configs": {name: training config as in a
virb config (optimizer, lr, momentum, scheduler: {type, ...})}}

Prints {name: {"lr": [...], "momentum": [...]}}: the value in effect at each optimiser step,
stepping the scheduler as virb does (StepLR and OneCycle after each epoch, Poly after each batch).
"""
import json
import sys

import torch


def sequence(cfg, epochs, steps):
    p = torch.nn.Parameter(torch.zeros(1))
    lr = cfg["lr"]
    if cfg["optimizer"].lower() == "adam":
        opt = torch.optim.Adam([p], lr=lr)
        mom_key = "betas"
    else:
        opt = torch.optim.SGD([p], lr=lr, momentum=cfg.get("momentum", 0.0))
        mom_key = "momentum"
    sched = cfg.get("scheduler")
    per_batch = False
    s = None
    if sched is None:
        pass
    elif sched["type"] == "StepLR":
        s = torch.optim.lr_scheduler.StepLR(opt, step_size=sched["step_size"], gamma=sched["gamma"])
    elif sched["type"] == "OneCycle":
        s = torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=lr,
            total_steps=epochs,
            pct_start=sched.get("pct_start", 0.3),
            div_factor=sched.get("div_factor", 25.0),
            final_div_factor=sched.get("final_div_factor", 1e4),
            anneal_strategy="linear",
            cycle_momentum=True,
            base_momentum=0.85,
            max_momentum=0.95,
        )
    elif sched["type"] == "Poly":
        s = torch.optim.lr_scheduler.PolynomialLR(
            opt, total_iters=epochs * steps, power=sched["exponent"]
        )
        per_batch = True
    else:
        raise SystemExit(f"unknown scheduler {sched['type']}")
    lrs, moms = [], []
    for _ in range(epochs):
        for _ in range(steps):
            g = opt.param_groups[0]
            lrs.append(g["lr"])
            m = g[mom_key]
            moms.append(m[0] if isinstance(m, tuple) else m)
            p.grad = torch.ones_like(p)
            opt.step()
            if per_batch:
                s.step()
        if s is not None and not per_batch:
            s.step()
    return {"lr": lrs, "momentum": moms}


def main():
    spec = json.loads(sys.argv[1])
    out = {
        name: sequence(cfg, spec["epochs"], spec["steps_per_epoch"])
        for name, cfg in spec["configs"].items()
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
