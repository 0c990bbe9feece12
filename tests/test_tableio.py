"""Reading and writing tables: formats, unreadable files, atomic writes, CSV injection."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest

from crsrisk.errors import ContractError
from crsrisk.io import (
    BAD_ROWS,
    CsvDialect,
    TableWriter,
    iter_table,
    read_table,
    sniff_csv,
    write_table,
)


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


# --- what sites send: Excel, other delimiters, decimal commas, gzip, broken rows ----------------


def test_excel_cells_are_read_as_the_text_they_show(tmp_path):
    path = tmp_path / "t.xlsx"
    pd.DataFrame({"patient_id": ["007", "P2"], "hb": [7, 12.5],
                  "day": [pd.Timestamp("2024-01-02"), pd.NaT]}).to_excel(path, index=False)
    df = read_table(path)
    assert df["patient_id"].tolist() == ["007", "P2"]
    assert df["hb"].tolist() == ["7", "12.5"]
    assert df["day"].tolist()[0] == "2024-01-02" and pd.isna(df["day"].iloc[1])


def test_excel_sheet_is_chosen_by_name_and_an_unknown_one_is_named(tmp_path):
    path = tmp_path / "t.xlsx"
    with pd.ExcelWriter(path) as writer:
        pd.DataFrame({"a": ["first"]}).to_excel(writer, sheet_name="Notes", index=False)
        pd.DataFrame({"patient_id": ["P1"]}).to_excel(writer, sheet_name="Export", index=False)
    assert read_table(path).columns.tolist() == ["a"]  # the first sheet by default
    assert read_table(path, sheet="Export")["patient_id"].tolist() == ["P1"]
    with pytest.raises(ContractError, match="has no sheet 'Data': its sheets are 'Notes'"):
        read_table(path, sheet="Data")


@pytest.mark.parametrize(("delimiter", "decimal"), [(";", ","), ("\t", "."), ("|", ","),
                                                     (",", ".")])
def test_delimiter_and_decimal_mark_are_sniffed(tmp_path, delimiter, decimal):
    path = tmp_path / "t.csv"
    number = f"1{decimal}5"
    cell = f'"{number}"' if delimiter == decimal else number
    path.write_text(f"patient_id{delimiter}crp{delimiter}note\n"
                    f"A{delimiter}{cell}{delimiter}\"x,y\"\nB{delimiter}2{delimiter}\n")
    assert sniff_csv(path) == CsvDialect(delimiter, decimal if delimiter != "," else ".")
    df = read_table(path)
    assert df.columns.tolist() == ["patient_id", "crp", "note"]
    assert df["crp"].tolist() == ["1.5", "2"]


def test_gzipped_semicolon_csv(tmp_path):
    path = tmp_path / "t.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("patient_id;crp\nA;1,5\n")
    assert read_table(path)["crp"].tolist() == ["1.5"]


def test_a_repeated_column_name_is_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("patient_id,crp,crp\nA,1,2\n")
    with pytest.raises(ContractError, match="has the column 'crp' twice"):
        read_table(path)


@pytest.mark.parametrize("chunk_size", [None, 1, 2, 100])
def test_rows_with_too_few_or_too_many_fields_are_placeholders_named_in_attrs(tmp_path,
                                                                            chunk_size):
    path = tmp_path / "t.csv"
    path.write_text("patient_id,x\nA,1\nB\nC,3\nD,4,extra\nE,5\n")
    chunks = list(iter_table(path, chunk_size=chunk_size))
    df = pd.concat(chunks)
    assert df["patient_id"].tolist()[::2] == ["A", "C", "E"]
    assert df.iloc[[1, 3]].isna().all().all()  # never padded or cut: not read at all
    bad = {k: v for chunk in chunks for k, v in chunk.attrs.get(BAD_ROWS, {}).items()}
    assert sorted(bad) == [1, 3]
    assert "has 1 fields where the header has 2 (line 3 of the file)" in bad[1]
    assert "has 3 fields where the header has 2 (line 5 of the file)" in bad[3]
    assert [c.index[0] for c in chunks] == list(range(0, 5, chunk_size or 5))
