"""Metric writing: JSON lines and TensorBoard event files (read back by an independent parser)."""

import struct

import numpy as np
from tensorboardX.proto import event_pb2

from leakjax.train import logging as train_logging


def _read_event_scalars(path):
    """Parses a TFRecord-framed event file by hand: uint64 length, crc, payload, crc."""
    scalars = []
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        payload = data[offset + 12 : offset + 12 + length]
        offset += 12 + length + 4
        event = event_pb2.Event.FromString(payload)
        for value in event.summary.value:
            scalars.append((event.step, value.tag, value.simple_value))
    return scalars


def test_writer_writes_jsonl_and_tensorboard_events(tmp_path):
    writer = train_logging.MetricWriter(tmp_path, tensorboard=True)
    writer.write_scalars(1, {"loss": np.float32(2.5), "lr": 1e-3})
    writer.write_scalars(2, {"loss": 2.0, "lr": 1e-3})
    writer.close()
    records = train_logging.read_jsonl(tmp_path / "metrics.jsonl")
    assert records == [{"step": 1, "loss": 2.5, "lr": 1e-3}, {"step": 2, "loss": 2.0, "lr": 1e-3}]
    (event_file,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    scalars = _read_event_scalars(event_file)
    assert [(s, t) for s, t, _ in scalars] == [(1, "loss"), (1, "lr"), (2, "loss"), (2, "lr")]
    np.testing.assert_allclose([v for _, _, v in scalars], [2.5, 1e-3, 2.0, 1e-3], rtol=1e-6)
