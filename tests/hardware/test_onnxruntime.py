from __future__ import annotations

import torch

from autoprune.tasks.digits import DigitsResNet


def test_onnx_export_matches_torch() -> None:
    import onnxruntime as ort

    from autoprune.hardware.onnxruntime_backend import export_onnx_bytes

    model = DigitsResNet(widths=(8, 16, 32)).eval()
    x = torch.randn(1, 1, 32, 32)
    session = ort.InferenceSession(export_onnx_bytes(model, x), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out), model(x).detach(), rtol=1e-4, atol=1e-5)
