"""The TFDS record source, against a stand-in ``tensorflow_datasets`` module.

TFDS is not installed in the test environment; the stand-in records the calls and returns
what ``tfds.data_source`` returns with ``SkipDecoding``: dicts of encoded bytes and labels.
"""

import io
import sys
import types

import numpy as np
import pytest
from PIL import Image

from examples.nf_resnet import image_folder, tfds_source


def jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (value, value, value)).save(buffer, format="JPEG", quality=100)
    return buffer.getvalue()


class SkipDecoding:
    pass


def fake_tfds(records, calls, prepared=True):
    def builder(name, data_dir=None):
        label = types.SimpleNamespace(names=["tench", "goldfish"])
        return types.SimpleNamespace(info=types.SimpleNamespace(features={"label": label}))

    def data_source(name, *, split, data_dir, download, decoders):
        calls.append(dict(name=name, split=split, data_dir=data_dir, download=download,
                          decoders=decoders))
        if not prepared:
            raise AssertionError(f"could not find data in {data_dir}")
        return records

    return types.SimpleNamespace(builder=builder, data_source=data_source,
                                 decode=types.SimpleNamespace(SkipDecoding=SkipDecoding))


def test_records_are_encoded_bytes_and_labels_read_without_decoding(monkeypatch):
    records = [{"image": np.bytes_(jpeg(40)), "label": np.int64(1)},
               {"image": jpeg(200), "label": 0},
               {"image": b"not a jpeg", "label": 0}]
    calls = []
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake_tfds(records, calls))
    source = tfds_source.tfds_source("imagenet2012", "validation", "/data")
    assert calls[0]["download"] is False and calls[0]["data_dir"] == "/data"
    assert isinstance(calls[0]["decoders"]["image"], SkipDecoding)
    assert source.classes == ("tench", "goldfish") and source.num_classes == 2
    assert len(source) == 3 and source[0] == (jpeg(40), 1)
    assert source.describe(2) == "imagenet2012/validation[2]"
    (batch,) = list(image_folder.eval_loader(source, global_batch_size=4, image_size=8))
    assert batch["label"].tolist() == [1, 0, 0, 0] and batch["mask"].tolist() == [1, 1, 0, 0]
    np.testing.assert_allclose(batch["image"][:2, 4, 4, 0], [40, 200], atol=2)


def test_unprepared_dataset_says_how_to_prepare_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake_tfds([], [], prepared=False))
    with pytest.raises(image_folder.ImageFolderError, match="file_format='array_record'"):
        tfds_source.tfds_source("imagenet2012", "train", "/nowhere")


def test_missing_tfds_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    with pytest.raises(ImportError, match="pip install tensorflow-datasets array_record"):
        tfds_source.tfds_source()
