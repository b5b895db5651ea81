"""Reference values from PyTorch for fine-tuning a ResNet-50 (plugins/encoder-resnet's tests).

usage: finetune_reference.py make OUTDIR
       finetune_reference.py check-state STATE.safetensors INPUT.safetensors OUT.safetensors

`make` writes, for one seeded torchvision ResNet-50 (make_weights.py's, BN statistics calibrated):
  weights.safetensors    its state_dict (torchvision names, with fc and num_batches_tracked)
  input.safetensors      `images` [4, 3, 64, 80], normalised
  expected.safetensors   computed in float64 (the reference for float32 code: the gradient reaching
                         conv1 through 53 train-mode batch norms carries ~1e-3 relative rounding
                         error in float32, PyTorch's own included), after `model.train()` and one
                         forward pass on `images`, then `embedding.sum().backward()`:
                           embedding                       the train-mode embedding [4, 2048]
                           grad.conv1.weight               d embedding.sum() / d conv1.weight
                           grad.layer4.2.bn3.weight        d embedding.sum() / d layer4.2.bn3.weight
                           bn1.running_mean, bn1.running_var, layer4.2.bn3.running_mean,
                           layer4.2.bn3.running_var        the running statistics after that pass
                           eval_embedding                  `model.eval()` embedding of `images`
                                                           after that pass (updated statistics)

`check-state` loads a state file an encoder saved into torchvision's `resnet50()` with
`load_state_dict(strict=False)`, prints {"missing": [...], "unexpected": [...]} as JSON, and writes
the eval-mode `embedding` of INPUT's `images` to OUT.
"""
import json
import os
import sys

import torch
import torchvision
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_weights import build_model  # noqa: E402


def embed(model, x):
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return torch.flatten(model.avgpool(x), 1)


def make(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    sd = build_model(0, [torch.randn(8, 3, 64, 64)]).state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(out, "weights.safetensors"))
    # A fresh module (build_model's batch norms use cumulative averages): momentum 0.1, as loaded.
    model = torchvision.models.resnet50()
    model.load_state_dict(sd)
    model.double()
    x = torch.randn(4, 3, 64, 80, generator=torch.Generator().manual_seed(1))
    save_file({"images": x}, os.path.join(out, "input.safetensors"))

    model.train()
    emb = embed(model, x.double())
    emb.sum().backward()
    expected = {
        "embedding": emb.detach(),
        "grad.conv1.weight": model.conv1.weight.grad,
        "grad.layer4.2.bn3.weight": model.layer4[2].bn3.weight.grad,
    }
    for name, bn in [("bn1", model.bn1), ("layer4.2.bn3", model.layer4[2].bn3)]:
        expected[name + ".running_mean"] = bn.running_mean.clone()
        expected[name + ".running_var"] = bn.running_var.clone()
    model.eval()
    with torch.no_grad():
        expected["eval_embedding"] = embed(model, x.double())
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(out, "expected.safetensors"))


def check_state(state_path, input_path, out):
    model = torchvision.models.resnet50()
    result = model.load_state_dict(load_file(state_path), strict=False)
    model.eval()
    with torch.no_grad():
        emb = embed(model, load_file(input_path)["images"])
    save_file({"embedding": emb.contiguous()}, out)
    print(json.dumps({"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys)}))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    elif len(sys.argv) == 5 and sys.argv[1] == "check-state":
        check_state(*sys.argv[2:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
