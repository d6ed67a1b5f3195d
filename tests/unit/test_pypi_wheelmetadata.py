"""METADATA read from a wheel (PEP 658 from cached wheels): the exact bytes of the one
dist-info of the wheel's own release, and a clear refusal for every hostile or broken zip."""

from __future__ import annotations

import io
import stat
import struct
import zipfile

import pytest

from mirror.ecosystems.pypi import wheelmetadata
from mirror.ecosystems.pypi.names import is_wheel
from mirror.ecosystems.pypi.wheelmetadata import (
    MAX_METADATA_BYTES,
    WheelMetadataError,
    read_wheel_metadata,
)

WHEEL = "Demo_Pkg-1.0-py3-none-any.whl"
METADATA = (
    b"Metadata-Version: 2.1\r\nName: Demo-Pkg\nVersion: 1.0\nRequires-Dist: idna>=2\n\n"
    b"Long description \xc3\xa9 with trailing spaces   \n"
)


def build(
    members: list[tuple[str | zipfile.ZipInfo, bytes]],
    *,
    compression: int = zipfile.ZIP_DEFLATED,
) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    buffer.seek(0)
    return buffer


def wheel(metadata: bytes = METADATA, directory: str = "demo_pkg-1.0.dist-info") -> io.BytesIO:
    return build(
        [
            ("demo_pkg/__init__.py", b"x = 1\n"),
            (f"{directory}/METADATA", metadata),
            (f"{directory}/WHEEL", b"Wheel-Version: 1.0\n"),
            (f"{directory}/RECORD", b""),
        ]
    )


def refused(file: io.BytesIO, filename: str = WHEEL) -> str:
    with pytest.raises(WheelMetadataError) as caught:
        read_wheel_metadata(file, filename)
    return str(caught.value)


def test_the_metadata_bytes_are_returned_byte_for_byte() -> None:
    assert read_wheel_metadata(wheel(), WHEEL) == METADATA


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_every_compression_zipfile_reads_is_read(compression: int) -> None:
    file = build([("demo_pkg-1.0.dist-info/METADATA", METADATA)], compression=compression)
    assert read_wheel_metadata(file, WHEEL) == METADATA


@pytest.mark.parametrize(
    "directory",
    ["Demo_Pkg-1.0.dist-info", "demo.pkg-1.0.dist-info", "DEMO_PKG-1.0.0.dist-info"],
)
def test_the_dist_info_name_is_compared_normalised(directory: str) -> None:
    assert read_wheel_metadata(wheel(directory=directory), WHEEL) == METADATA


def test_a_wheel_read_from_any_position_and_a_build_tag() -> None:
    file = wheel()
    file.seek(17)
    assert read_wheel_metadata(file, "demo_pkg-1.0-1build-py3-none-any.whl") == METADATA


def test_a_nested_dist_info_of_a_vendored_package_does_not_count() -> None:
    file = build(
        [
            ("demo_pkg-1.0.dist-info/METADATA", METADATA),
            ("demo_pkg/_vendor/other-2.0.dist-info/METADATA", b"Name: other\n"),
        ]
    )
    assert read_wheel_metadata(file, WHEEL) == METADATA


def test_two_dist_info_directories_are_refused() -> None:
    file = build(
        [
            ("demo_pkg-1.0.dist-info/METADATA", METADATA),
            ("evil-1.0.dist-info/METADATA", b"Name: evil\n"),
        ]
    )
    assert "exactly one top-level .dist-info" in refused(file)


def test_no_dist_info_is_refused() -> None:
    assert "found none" in refused(build([("demo_pkg/__init__.py", b"")]))


@pytest.mark.parametrize(
    "directory", ["other-1.0.dist-info", "demo_pkg-1.1.dist-info", "demo_pkg.dist-info"]
)
def test_a_dist_info_of_another_release_is_refused(directory: str) -> None:
    assert "is not the dist-info of" in refused(wheel(directory=directory))


def test_a_second_metadata_member_under_the_same_name_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("demo_pkg-1.0.dist-info/METADATA", METADATA)
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("demo_pkg-1.0.dist-info/METADATA", b"Name: evil\n")
    buffer.seek(0)
    assert "exactly one demo_pkg-1.0.dist-info/METADATA (found 2)" in refused(buffer)


def test_a_dist_info_without_metadata_is_refused() -> None:
    file = build([("demo_pkg-1.0.dist-info/WHEEL", b"")])
    assert "(found 0)" in refused(file)


@pytest.mark.parametrize(
    "name",
    [
        "../demo_pkg-1.0.dist-info/METADATA",
        "demo_pkg-1.0.dist-info/../demo_pkg-1.0.dist-info/METADATA",
        "./demo_pkg-1.0.dist-info/METADATA",
        "/etc/passwd",
        "demo_pkg-1.0.dist-info\\METADATA",
        "C:/demo_pkg-1.0.dist-info/METADATA",
    ],
)
def test_a_member_with_a_path_trick_is_refused(name: str) -> None:
    file = build([("demo_pkg-1.0.dist-info/METADATA", METADATA), (name, b"Name: evil\n")])
    assert "hostile path" in refused(file)


def test_a_symlink_metadata_is_refused() -> None:
    info = zipfile.ZipInfo("demo_pkg-1.0.dist-info/METADATA")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    file = build([(info, b"/etc/passwd")])
    assert "not a regular file" in refused(file)


def test_a_directory_entry_named_metadata_is_refused() -> None:
    info = zipfile.ZipInfo("demo_pkg-1.0.dist-info/METADATA/")
    file = build([(info, b""), ("demo_pkg-1.0.dist-info/WHEEL", b"")])
    assert "(found 0)" in refused(file)


def test_an_encrypted_metadata_is_refused() -> None:
    file = wheel()
    data = bytearray(file.getvalue())
    # Set the encryption flag of METADATA in its central directory entry.
    central = data.find(b"PK\x01\x02", data.find(b"PK\x01\x02") + 1)
    flags = struct.unpack_from("<H", data, central + 8)[0]
    struct.pack_into("<H", data, central + 8, flags | 1)
    assert "encrypted" in refused(io.BytesIO(bytes(data)))


def test_a_huge_metadata_is_refused_by_its_declared_size() -> None:
    file = wheel(metadata=b"a" * (MAX_METADATA_BYTES + 1))
    assert "more than" in refused(file)


def test_a_zip_bomb_lying_about_its_size_is_cut_off() -> None:
    # 8 MiB + 1 of zeros deflates to a few kB; the entry then claims to be 100 bytes.
    file = wheel(metadata=b"\0" * (MAX_METADATA_BYTES + 1))
    data = bytearray(file.getvalue())
    assert len(data) < 100_000
    name = b"demo_pkg-1.0.dist-info/METADATA"
    for header, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (start := data.find(header, start)) >= 0:
            name_at = start + (30 if header == b"PK\x03\x04" else 46)
            if data[name_at : name_at + len(name)] == name:
                struct.pack_into("<L", data, start + offset, 100)
            start += 4
    # Read up to the 100 bytes it claims, no further: those do not match its CRC.
    assert "Bad CRC-32" in refused(io.BytesIO(bytes(data)))


def test_a_corrupt_crc_is_refused() -> None:
    file = build([("demo_pkg-1.0.dist-info/METADATA", METADATA)], compression=zipfile.ZIP_STORED)
    data = bytearray(file.getvalue())
    at = data.find(b"Long description")
    data[at] ^= 0xFF
    assert "not a readable zip" in refused(io.BytesIO(bytes(data)))


@pytest.mark.parametrize(
    "raw",
    [b"", b"not a zip at all", b"PK\x05\x06" + b"\0" * 18, b"PK\x03\x04" + b"\xff" * 500],
)
def test_a_file_that_is_not_a_zip_is_refused(raw: bytes) -> None:
    assert "zip" in refused(io.BytesIO(raw)) or raw.startswith(b"PK\x05\x06")


def test_a_truncated_wheel_is_refused() -> None:
    data = wheel().getvalue()
    for cut in (len(data) // 3, len(data) - 10):
        assert "zip" in refused(io.BytesIO(data[:cut]))


def test_a_huge_central_directory_is_refused_before_zipfile_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    file = build([(f"demo_pkg/{index}.py", b"") for index in range(50)])
    monkeypatch.setattr(wheelmetadata, "MAX_CENTRAL_DIRECTORY", 1000)
    assert "bytes of members" in refused(file)


def zip64_wheel(monkeypatch: pytest.MonkeyPatch) -> io.BytesIO:
    """A wheel with zip64 end records (zipfile writes them past 65,535 members)."""
    with monkeypatch.context() as patch:
        patch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)
        file = wheel()
    assert b"PK\x06\x06" in file.getvalue()
    return file


def test_a_zip64_wheel_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_wheel_metadata(zip64_wheel(monkeypatch), WHEEL) == METADATA


def test_a_zip64_central_directory_is_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    file = zip64_wheel(monkeypatch)
    monkeypatch.setattr(wheelmetadata, "MAX_CENTRAL_DIRECTORY", 100)
    assert "bytes of members" in refused(file)


def test_a_broken_zip64_end_record_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytearray(zip64_wheel(monkeypatch).getvalue())
    at = data.rfind(b"PK\x06\x06")
    data[at : at + 4] = b"XXXX"
    assert "zip64" in refused(io.BytesIO(bytes(data)))


@pytest.mark.parametrize("filename", ["demo-1.0.tar.gz", "demo.whl", "demo-1.0-py3.whl"])
def test_a_file_name_that_is_no_wheel_is_refused(filename: str) -> None:
    assert "not a wheel file name" in refused(wheel(), filename)


def test_is_wheel() -> None:
    assert is_wheel("a-1.0-py3-none-any.WHL")
    assert not is_wheel("a-1.0.tar.gz")


def test_a_wheel_with_much_member_data_and_a_small_directory_is_read() -> None:
    # The directory's offset (past 17 MiB of data) is not its size (a few hundred bytes).
    big = bytes(range(256)) * (17 * 1024 * 4)
    file = build(
        [
            ("demo_pkg/data.bin", big),
            ("demo_pkg-1.0.dist-info/METADATA", METADATA),
        ],
        compression=zipfile.ZIP_STORED,
    )
    assert read_wheel_metadata(file, WHEEL) == METADATA


def test_a_small_wheel_with_too_many_members_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    file = build(
        [("demo_pkg-1.0.dist-info/METADATA", METADATA)]
        + [(f"demo_pkg/{index}.py", b"") for index in range(60)]
    )
    monkeypatch.setattr(wheelmetadata, "MAX_MEMBERS", 50)
    assert "more than the 50" in refused(file)


def test_members_hidden_from_the_end_record_s_count_are_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = bytearray(
        build(
            [("demo_pkg-1.0.dist-info/METADATA", METADATA)]
            + [(f"demo_pkg/{index}.py", b"") for index in range(60)]
        ).getvalue()
    )
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<2H", data, end + 8, 1, 1)  # declares one member
    monkeypatch.setattr(wheelmetadata, "MAX_MEMBERS", 50)
    assert "has 61 members" in refused(io.BytesIO(bytes(data)))


def test_a_small_wheel_with_a_huge_directory_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Per-member comments make the directory far larger than the members' data (and than
    # its own offset, which is what the size was once confused with).
    members: list[tuple[str | zipfile.ZipInfo, bytes]] = []
    for index in range(20):
        info = zipfile.ZipInfo(f"demo_pkg/{index}.py")
        info.comment = b"c" * 60_000
        members.append((info, b""))
    file = build([("demo_pkg-1.0.dist-info/METADATA", METADATA), *members])
    monkeypatch.setattr(wheelmetadata, "MAX_CENTRAL_DIRECTORY", 1024 * 1024)
    assert "bytes of members" in refused(file)
