"""``longvivit.data``'s lazy public names all resolve (``from longvivit.data import *`` included)."""

from __future__ import annotations

import importlib

import longvivit.data as data


def test_every_public_name_of_longvivit_data_resolves():
    # load_tokenizer moved to longvivit.data.collate but the lazy table still pointed at shards: `import *` and
    # `longvivit.data.load_tokenizer` raised AttributeError.
    for name in data.__all__:
        assert getattr(data, name) is not None, name
    namespace: dict = {}
    exec("from longvivit.data import *", namespace)
    assert set(data.__all__) <= set(namespace)
    assert data.load_tokenizer is importlib.import_module("longvivit.data.collate").load_tokenizer
