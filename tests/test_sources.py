from collections import Counter

import fsspec
import numpy as np
import pandas as pd
import pytest
from imagegen import encode

from palette_dask import extract_palette
from palette_dask.reads import read_bytes
from palette_dask.sources import (
    check_inputs,
    chunked,
    describe_skipped,
    image_id,
    iter_uris,
    normalize_uri,
)


@pytest.fixture
def tree(tmp_path):
    png = encode(np.full((4, 4, 3), 9, np.uint8), "PNG")
    for rel in ["b.png", "a.JPG", "sub/c.webp", "sub/deeper/d.tiff", "notes.md", "sub/e.txt"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
    return tmp_path


def test_folder_is_walked_recursively_in_sorted_order(tree):
    assert list(iter_uris([str(tree)])) == [
        str(tree / "a.JPG"),
        str(tree / "b.png"),
        str(tree / "sub/c.webp"),
        str(tree / "sub/deeper/d.tiff"),
    ]


def test_glob_keeps_image_files(tree):
    assert list(iter_uris([str(tree / "**" / "*.*")])) == sorted(
        [
            str(tree / "a.JPG"),
            str(tree / "b.png"),
            str(tree / "sub/c.webp"),
            str(tree / "sub/deeper/d.tiff"),
        ]
    )


@pytest.fixture
def mixed(tmp_path):
    """One photograph in three formats beside files that are not images (listing never decodes)."""
    for rel in ["coffee.avif", "coffee.jp2", "coffee.png", "notes.md", "sub/data.csv", "LICENSE"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"bytes")
    return tmp_path


def test_folder_walk_takes_every_image_format_and_counts_the_rest(mixed):
    skipped = Counter()
    uris = iter_uris([str(mixed)], skipped=skipped)
    assert list(uris) == [str(mixed / f"coffee.{ext}") for ext in ("avif", "jp2", "png")]
    assert skipped == {".md": 1, ".csv": 1, "(none)": 1}
    line = describe_skipped(skipped)
    assert line == "skipped 3 files that are not images: (none) 1, .csv 1, .md 1"


def test_glob_counts_the_files_it_skips(mixed):
    skipped = Counter()
    uris = iter_uris([str(mixed / "*")], skipped=skipped)
    assert list(uris) == [str(mixed / f"coffee.{ext}") for ext in ("avif", "jp2", "png")]
    assert skipped == {".md": 1, ".csv": 1, "(none)": 1}


def test_double_star_glob_lists_each_file_once(mixed):
    skipped = Counter()
    uris = list(iter_uris([str(mixed / "**")], skipped=skipped))
    assert uris == [str(mixed / f"coffee.{ext}") for ext in ("avif", "jp2", "png")]
    assert skipped == {".md": 1, ".csv": 1, "(none)": 1}


def test_files_named_explicitly_are_never_skipped(mixed):
    manifest = mixed / "list.txt"
    manifest.write_text("coffee.png\n")
    skipped = Counter()
    uris = iter_uris([str(mixed / "notes.md"), str(manifest)], skipped=skipped)
    assert list(uris) == [str(mixed / "notes.md"), str(mixed / "coffee.png")]
    assert not skipped


@pytest.mark.parametrize(
    ("name", "counted_as"),
    [
        ("NOTES.MD", ".md"),
        ("notes.txt.BAK", ".bak"),
        ("shard.tar.gz", None),  # a compressed tar shard is an input
        ("README", "(none)"),
        ("trailing.", "(none)"),
        (".DS_Store", "(none)"),  # a hidden file is a file: its leading dot is no extension
        (".hidden.png", None),
        ("SHOT.HEIC", None),
        ("scan.j2k", None),
    ],
)
def test_skipped_files_count_under_their_lower_case_extension(tmp_path, name, counted_as):
    (tmp_path / name).write_bytes(b"bytes")
    skipped = Counter()
    uris = list(iter_uris([str(tmp_path)], skipped=skipped))
    if counted_as is None:
        assert uris == [str(tmp_path / name)] and not skipped
    else:
        assert uris == [] and skipped == {counted_as: 1}


def test_explicit_file_and_file_url_are_the_same_image(tree):
    path = str(tree / "b.png")
    assert list(iter_uris([path, f"file://{path}"])) == [path, path]
    assert image_id(path) == image_id(f"file://{path}")
    assert image_id(path) != image_id(str(tree / "a.JPG"))


def test_relative_paths_normalise_to_absolute(tree, monkeypatch):
    monkeypatch.chdir(tree)
    assert normalize_uri("sub/c.webp") == str(tree / "sub/c.webp")


def test_text_manifest_resolves_relative_paths_and_skips_comments(tree):
    manifest = tree / "list.txt"
    manifest.write_text("# images\nb.png\n\nsub/c.webp\n/elsewhere/missing.jpg\nmemory://x/y.png\n")
    assert list(iter_uris([str(manifest)])) == [
        str(tree / "b.png"),
        str(tree / "sub/c.webp"),
        "/elsewhere/missing.jpg",
        "memory://x/y.png",
    ]


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_table_manifests_read_the_uri_column(tree, kind):
    frame = pd.DataFrame({"uri": ["b.png", str(tree / "a.JPG")], "label": [1, 2]})
    manifest = tree / f"list.{kind}"
    frame.to_csv(manifest, index=False) if kind == "csv" else frame.to_parquet(manifest)
    assert list(iter_uris([str(manifest)])) == [str(tree / "b.png"), str(tree / "a.JPG")]


def test_manifest_without_uri_column_is_refused(tree):
    manifest = tree / "bad.csv"
    manifest.write_text("path\nb.png\n")
    with pytest.raises(ValueError, match="has no 'uri' column"):
        list(iter_uris([str(manifest)]))


def test_large_manifest_is_streamed_not_loaded(tree):
    manifest = tree / "big.txt"
    manifest.write_text("".join(f"/img/{i}.jpg\n" for i in range(100_000)))
    stream = iter_uris([str(manifest)])
    first = next(chunked(stream, 10))
    assert first[0] == "/img/0.jpg" and len(first) == 10
    assert next(stream) == "/img/10.jpg"  # the rest is still unread


def test_memory_urls_are_listed_and_read():
    fs = fsspec.filesystem("memory")
    red = encode(np.full((6, 6, 3), (200, 0, 0), np.uint8), "PNG")
    fs.pipe({"/srcs/one.png": red, "/srcs/nested/two.png": red, "/srcs/skip.json": b"{}"})
    uris = list(iter_uris(["memory://srcs"]))
    assert uris == ["memory:///srcs/nested/two.png", "memory:///srcs/one.png"]
    assert read_bytes(uris[0]) == red
    assert extract_palette(uris[0]).hex == ["#c80000"]


def test_missing_input_fails_before_anything_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"input .*nope.* does not exist"):
        check_inputs([str(tmp_path / "nope")])
    with pytest.raises(ValueError, match="no input given"):
        check_inputs([])
    check_inputs([str(tmp_path / "*.jpg")])  # a glob may match nothing


def test_chunked_is_lazy_and_complete():
    assert list(chunked(iter(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunked([], 3)) == []
