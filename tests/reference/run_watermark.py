"""Put and read marks with the ORIGINAL invisible-watermark 0.2.0 (its `dwtDct` method, over the
PyWavelets and OpenCV wheels the harness pins) in a subprocess: `python run_watermark.py job.json`,
started by original_watermark.py. The images travel as RGB uint8 arrays in one .npz file; the
package works in BGR, as the original scripts hand it cv2.cvtColor(..., COLOR_RGB2BGR).
"""

import json
import sys

import numpy as np


def main(job_path: str) -> None:
    job = json.load(open(job_path))
    sys.path[:0] = job["roots"]
    import cv2
    import pywt
    from imwatermark import WatermarkDecoder, WatermarkEncoder

    for module in (cv2, pywt, sys.modules["imwatermark"]):
        if not any(module.__file__.startswith(root) for root in job["roots"]):
            raise SystemExit(f"imported the wrong {module.__name__} ({module.__file__})")
    images, outputs = np.load(job["inputs"]), {}
    for name in images.files:
        bgr = np.ascontiguousarray(images[name][..., ::-1])
        if job["encode"]:
            encoder = WatermarkEncoder()
            encoder.set_watermark("bytes", job["mark"].encode("latin-1"))
            outputs[name] = encoder.encode(bgr, "dwtDct")[..., ::-1]
        else:
            decoded = WatermarkDecoder("bytes", 8 * job["length"]).decode(bgr, "dwtDct")
            outputs[name] = np.frombuffer(decoded, dtype=np.uint8)
    np.savez(job["outputs"], **outputs)


if __name__ == "__main__":
    main(sys.argv[1])
