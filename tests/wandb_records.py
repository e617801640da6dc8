"""Read back what W&B wrote: the history rows of an offline run's ``run-<id>.wandb`` file.

Run with a Python that has wandb: ``python tests/wandb_records.py FILE`` prints one JSON object per
history row. The file is LevelDB's log format (32 KiB blocks of records, each with a 7-byte header:
CRC, length, type FULL/FIRST/MIDDLE/LAST) after W&B's 7-byte file header; the records are W&B's own
protobuf ``Record`` messages, decoded with its generated classes.
"""

import json
import struct
import sys

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(data: bytes):
    assert data[:4] == b":W&B", "not a W&B transaction log"
    pos, part = HEADER, b""
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:            # the block's tail is padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:
            break
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            part = chunk
        elif kind == MIDDLE:
            part += chunk
        elif kind == LAST:
            yield part + chunk
            part = b""


def main(path: str) -> None:
    from wandb.proto import wandb_internal_pb2 as pb

    with open(path, "rb") as f:
        data = f.read()
    for raw in records(data):
        rec = pb.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") == "history":
            print(json.dumps({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                              for item in rec.history.item}))


if __name__ == "__main__":
    main(sys.argv[1])
