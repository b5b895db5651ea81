"""Reference values from PyTorch itself, for the Rust tests.

usage: torch_reference.py OUTDIR

Writes, for one seeded torchvision ResNet-50 (BN statistics calibrated so values are well scaled):
  weights.pt             torch.save(model.state_dict())          (torchvision's format)
  weights_virb.pt        the same with every key prefixed `model.` (ViRB's format)
  weights_legacy.pt      the same in the legacy (non-zip) format
  weights.safetensors    the same as safetensors
  nested.pt              {"epoch": 3, "state_dict": state_dict}   (a training checkpoint)
  missing.pt             without `layer3.1.conv2.weight`
  misshaped.pt           with `layer2.0.bn1.weight` of the wrong shape
  input.safetensors      `images` [2, 3, 64, 80], normalised
  expected.safetensors   torchvision's conv, block1..block4, embedding on that input
  weights_resnet18.pt, expected_resnet18.safetensors
                         a seeded ResNet-18 (basic blocks) and its outputs on the same input
  image.jpg, image_expected.safetensors
                         a JPEG, PIL's decoding of it (`image_rgb`, uint8 HxWx3) and torchvision's
                         Resize((56,56)) + ToTensor + Normalize of it (`image`)
  linear_init.safetensors
                         `nn.Linear(2048, 12)` after `torch.manual_seed(3)` (`weight`, `bias`) and
                         `nn.Linear(96, 512)`, `nn.Linear(512, 5)` after `torch.manual_seed(4)`
                         (`mlp0_*`, `mlp2_*`): PyTorch's default initialisation
  big.jpg, gray.jpg, cmyk.jpg, big_expected.safetensors
                         a 1000x760 colour, a 720x560 grayscale and a 400x300 CMYK JPEG; PIL's
                         decoding of each at full scale (`big_rgb`, `gray_rgb`, `cmyk_rgb`, RGB) and at the reduced scales of
                         `Image.draft` (`big_half_rgb`, `big_quarter_rgb`, `gray_quarter_rgb`), and
                         torchvision's Resize((112,112)) + ToTensor + Normalize of the full-scale
                         colour decode (`big`)
"""
import os
import sys

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_weights import build_model  # noqa: E402


def pyramid(model, x):
    """torchvision's conv, block1..block4 and embedding of `x`."""
    with torch.no_grad():
        conv = model.relu(model.bn1(model.conv1(x)))
        b1 = model.layer1(model.maxpool(conv))
        b2 = model.layer2(b1)
        b3 = model.layer3(b2)
        b4 = model.layer4(b3)
        emb = torch.flatten(model.avgpool(b4), 1)
    return {"conv": conv, "block1": b1, "block2": b2, "block3": b3, "block4": b4, "embedding": emb}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = build_model(0, [torch.randn(8, 3, 64, 64)])
    sd = model.state_dict()
    torch.save(sd, os.path.join(out, "weights.pt"))
    torch.save(type(sd)(("model." + k, v) for k, v in sd.items()), os.path.join(out, "weights_virb.pt"))
    torch.save(sd, os.path.join(out, "weights_legacy.pt"), _use_new_zipfile_serialization=False)
    save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(out, "weights.safetensors"))
    torch.save({"epoch": 3, "state_dict": sd}, os.path.join(out, "nested.pt"))
    missing = type(sd)((k, v) for k, v in sd.items() if k != "layer3.1.conv2.weight")
    torch.save(missing, os.path.join(out, "missing.pt"))
    bad = type(sd)(sd)
    bad["layer2.0.bn1.weight"] = torch.ones(7)
    torch.save(bad, os.path.join(out, "misshaped.pt"))

    x = torch.randn(2, 3, 64, 80)
    save_file({"images": x}, os.path.join(out, "input.safetensors"))
    save_file(pyramid(model, x), os.path.join(out, "expected.safetensors"))
    r18 = build_model(0, [torch.randn(8, 3, 64, 64)], "resnet18")
    torch.save(r18.state_dict(), os.path.join(out, "weights_resnet18.pt"))
    save_file(pyramid(r18, x), os.path.join(out, "expected_resnet18.safetensors"))

    torch.manual_seed(3)
    lin = torch.nn.Linear(2048, 12)
    torch.manual_seed(4)
    mlp0, mlp2 = torch.nn.Linear(96, 512), torch.nn.Linear(512, 5)
    save_file(
        {
            "weight": lin.weight.detach().contiguous(),
            "bias": lin.bias.detach().contiguous(),
            "mlp0_weight": mlp0.weight.detach().contiguous(),
            "mlp0_bias": mlp0.bias.detach().contiguous(),
            "mlp2_weight": mlp2.weight.detach().contiguous(),
            "mlp2_bias": mlp2.bias.detach().contiguous(),
        },
        os.path.join(out, "linear_init.safetensors"),
    )

    # A photo-like JPEG (smooth gradients plus texture) and torchvision's preprocessing of it.
    g = torch.Generator().manual_seed(1)
    h, w = 90, 120
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    img = torch.stack([xx * 2.0, yy * 2.5, (xx + yy) * 1.2]) + 20 * torch.rand(3, h, w, generator=g)
    img = img.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(img).save(os.path.join(out, "image.jpg"), quality=92)
    tf = T.Compose([T.Resize((56, 56)), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ref = tf(Image.open(os.path.join(out, "image.jpg")).convert("RGB"))
    rgb = torch.from_numpy(np.asarray(Image.open(os.path.join(out, "image.jpg")).convert("RGB")).copy())
    save_file({"image": ref.contiguous(), "image_rgb": rgb}, os.path.join(out, "image_expected.safetensors"))

    # Larger JPEGs for reduced-scale decoding (PIL's draft mode runs libjpeg's IDCT scaling).
    h, w = 760, 1000
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    big = torch.stack([xx * 0.25, yy * 0.3, 128 + 100 * torch.sin(xx / 37.0) * torch.cos(yy / 23.0)])
    big = (big + 25 * torch.rand(3, h, w, generator=g)).clamp(0, 255).to(torch.uint8)
    big = big.permute(1, 2, 0).numpy()
    Image.fromarray(big).save(os.path.join(out, "big.jpg"), quality=90)
    Image.fromarray(big[:560, :720, 1]).save(os.path.join(out, "gray.jpg"), quality=90)
    Image.fromarray(big[:300, :400]).convert("CMYK").save(os.path.join(out, "cmyk.jpg"), quality=90)

    def decode(name, scale=1):
        with Image.open(os.path.join(out, name)) as im:
            if scale > 1:
                im.draft(im.mode, (im.width // scale, im.height // scale))
            rgb = np.asarray(im.convert("RGB")).copy()
        return torch.from_numpy(rgb)

    tf = T.Compose([T.Resize((112, 112)), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    with Image.open(os.path.join(out, "big.jpg")) as im:
        big_ref = tf(im.convert("RGB")).contiguous()
    save_file(
        {
            "big_rgb": decode("big.jpg"),
            "big_half_rgb": decode("big.jpg", 2),
            "big_quarter_rgb": decode("big.jpg", 4),
            "gray_rgb": decode("gray.jpg"),
            "gray_quarter_rgb": decode("gray.jpg", 4),
            "cmyk_rgb": decode("cmyk.jpg"),
            "big": big_ref,
        },
        os.path.join(out, "big_expected.safetensors"),
    )


if __name__ == "__main__":
    main()
