"""Reading and writing tables: formats, unreadable files, atomic writes, CSV injection."""

from __future__ import annotations

import pandas as pd
import pytest

from crsrisk.errors import ContractError
from crsrisk.io import TableWriter, iter_table, read_table, write_table


def test_csv_cells_are_read_as_text(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("patient_id,age_years\n007,61\n")
    df = read_table(path)
    assert df["patient_id"].tolist() == ["007"]  # leading zeros survive
    assert df["age_years"].tolist() == ["61"]


def test_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeffpatient_id,x\nA,1\n".encode())
    assert list(read_table(path).columns) == ["patient_id", "x"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "is empty"),
        ("header_only.csv", b"\n", "is empty"),
        ("latin1.csv", "patient_id,site\nA,M\xfcnchen\n".encode("latin-1"), "not UTF-8"),
        ("garbage.csv", bytes(range(256)) * 8, "not UTF-8"),
        ("garbage.parquet", b"PAR1 not really parquet", "could not be read as parquet"),
        ("table.xlsx", b"PK\x03\x04", "could not be read as an Excel workbook"),
        ("table.docx", b"PK\x03\x04", "neither CSV, Excel nor Parquet"),
    ],
)
def test_unreadable_files_raise_one_sentence(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ContractError, match=message):
        read_table(path)


def test_missing_file(tmp_path):
    with pytest.raises(ContractError, match="does not exist"):
        read_table(tmp_path / "nope.csv")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_chunks_keep_file_row_positions(tmp_path, suffix):
    path = tmp_path / f"t{suffix}"
    write_table(pd.DataFrame({"patient_id": [f"P{i}" for i in range(10)]}), path)
    chunks = list(iter_table(path, chunk_size=4))
    assert [len(c) for c in chunks] == [4, 4, 2]
    assert [c.index[0] for c in chunks] == [0, 4, 8]


def test_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "scores.csv"
    with pytest.raises(RuntimeError), TableWriter(path) as writer:
        writer.write(pd.DataFrame({"a": [1]}))
        raise RuntimeError("killed mid-run")
    assert list(tmp_path.iterdir()) == []


def test_formulas_are_neutralised_in_csv_output(tmp_path):
    path = tmp_path / "rejected.csv"
    write_table(pd.DataFrame({"value": ["=cmd|' /C calc'!A0", "ok", None]}), path)
    assert read_table(path)["value"].tolist()[:2] == ["'=cmd|' /C calc'!A0", "ok"]


def test_parquet_round_trip_in_chunks(tmp_path):
    path = tmp_path / "out.parquet"
    with TableWriter(path) as writer:
        writer.write(pd.DataFrame({"a": [1.0, 2.0], "b": ["x", None]}))
        writer.write(pd.DataFrame({"a": [3.0], "b": [None]}))
    assert read_table(path)["a"].tolist() == [1.0, 2.0, 3.0]
