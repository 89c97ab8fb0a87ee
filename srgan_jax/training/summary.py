"""Training summaries: `metrics.jsonl`, plus TensorBoard event files when `tensorboard` is installed.

Event files are framed with the `tensorboard` package's `RecordWriter` on a file we open
ourselves: its `EventFileWriter` goes through `tf.io.gfile`, which imports all of
TensorFlow when it is installed (seconds per start) although plain files need none of it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import time
from pathlib import Path

import numpy as np


class SummaryWriter:
    """Scalars and images for one workdir; a no-op on processes other than the first.

    A run resumed at `resume_step` first drops what an earlier run logged after that step
    (it is logged again): rows of `metrics.jsonl`, and in TensorBoard through a session
    start event, which makes TensorBoard discard the older events from that step on.
    """

    def __init__(self, workdir: str | Path, resume_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self._jsonl = None
        self._events = None
        if not enabled:
            return
        workdir = Path(workdir)
        _drop_rows_after(workdir / "metrics.jsonl", resume_step)
        self._jsonl = open(workdir / "metrics.jsonl", "a")
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.record_writer import RecordWriter
        except ImportError:
            logging.info("tensorboard not installed: scalars go to metrics.jsonl only")
            return
        self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
        (workdir / "tensorboard").mkdir(exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
        self._events_file = open(workdir / "tensorboard" / name, "wb")
        self._events = RecordWriter(self._events_file)
        self._add(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        if resume_step:
            start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
            self._add(event_pb2.Event(wall_time=time.time(), step=resume_step + 1, session_log=start))

    def _add(self, event) -> None:
        self._events.write(event.SerializeToString())
        self._events_file.flush()

    def _write(self, step: int, value) -> None:
        summary = self._summary_pb2.Summary(value=[value])
        self._add(self._event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._jsonl.write(json.dumps({"step": int(step), **{k: float(v) for k, v in values.items()}}) + "\n")
        self._jsonl.flush()
        if self._events is not None:
            for name, value in values.items():
                self._write(step, self._summary_pb2.Summary.Value(tag=name, simple_value=float(value)))

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        """uint8 [H, W, 3] image, PNG-encoded into the event file."""
        if not self.enabled or self._events is None:
            return
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        encoded = self._summary_pb2.Summary.Image(height=image.shape[0], width=image.shape[1], colorspace=3,
                                                  encoded_image_string=buffer.getvalue())
        self._write(step, self._summary_pb2.Summary.Value(tag=name, image=encoded))

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._events is not None:
            self._events_file.close()


def _drop_rows_after(path: Path, step: int) -> None:
    """Rewrite `path` (JSON lines) without the rows past `step`, atomically; a torn last line goes too."""
    if not path.exists():
        return
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            row_step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            row_step = None  # cut short by a kill
        if row_step is not None and row_step <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        partial = path.with_suffix(".jsonl.tmp")
        partial.write_text("".join(line + "\n" for line in kept))
        os.replace(partial, path)
        logging.info("%s: dropped %d rows past step %d (they are logged again)", path, dropped, step)
