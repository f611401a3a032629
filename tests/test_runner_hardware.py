"""Accelerator detection against fake nvidia-smi, rocm-smi and amd-smi that print what the real tools print."""

import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from corral_runner import hardware
from corral_runner.config import RunnerConfig
from corral_runner.loop import RunnerLoop

MIB = 2**20


def reported() -> list[dict[str, object]]:
    """What a local runner reports of this machine when it checks in."""
    with tempfile.TemporaryDirectory() as folder:
        config = RunnerConfig(
            server="http://corral.test", token="crl_x", spool_dir=Path(folder) / "spool", work_dir=Path(folder) / "w"
        )
        return [device.model_dump(exclude={"nodes"}) for device in RunnerLoop(config).report().accelerators]


def detected() -> list[dict[str, object]]:
    """What the runner detects, as it reports it (one node of each shape)."""
    found = [device.model_dump() for device in hardware.detect()]
    assert all(device.pop("nodes") == 1 for device in found)
    return found


# The exact command lines hardware.py runs: a fake answers only these, so a changed flag fails the test.
ARGUMENTS = {
    "nvidia-smi": ["--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
    "rocm-smi": ["--showmeminfo", "vram", "--showproductname", "--json"],
    "amd-smi": ["static", "--asic", "--vram", "--json"],
}

FAKE = """#!{python}
import sys
if sys.argv[1:] != {arguments!r}:
    sys.exit("unexpected arguments: " + " ".join(sys.argv[1:]))
sys.stdout.write({stdout!r})
sys.exit({code})
"""

# nvidia-smi on an 8 x H100 SXM node (driver 565.57.01): "NVIDIA H100 80GB HBM3", 81559 MiB each
# (thamada/nvidia-smi, nvsim/H100SXMx8_smi.py). The csv query prints "name, memory.total" per GPU.
H100 = "NVIDIA H100 80GB HBM3, 81559\n"
# thamada/nvidia-smi, gls/A100SXMx4_smi.py (81920 MiB) and gls/L4_smi.py (23034 MiB).
A100 = "NVIDIA A100-SXM4-80GB, 81920\n"
L4 = "NVIDIA L4, 23034\n"
# A DGX Spark: the GB10 shares the system's RAM and reports no memory.total (NVIDIA's DGX Spark known issues;
# captured in unslothai/unsloth#10703: "0, NVIDIA GB10, [N/A], [N/A]" for index,name,memory.total,memory.free).
GB10 = "NVIDIA GB10, [N/A]\n"
# nvidia-smi with a driver/library mismatch prints this and exits 18 (anderskm/gputil#55).
NVML_MISMATCH = "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 535.161\n"


def rocm_smi_mi300x(cards: int) -> str:
    """rocm-smi --showmeminfo vram --showproductname --json on an MI300X box, as rocm_smi.py prints it."""
    # One line of json.dumps({"cardN": {...}}), every value a string, memory fields first because main() runs
    # showMemInfo before showProduct (ROCm/rocm-systems, projects/rocm-smi-lib/python_smi_tools/rocm_smi.py).
    # Product fields from `rocm-smi --showproductname` on an MI300X, ROCm 6.1.2 (ROCm/rocm-blogs, llama-Qlora);
    # VRAM from `rocm-smi --showmeminfo vram` on an MI300X in SPX mode, ROCm 6.3 (ROCm/legacy-rocm-build#4750).
    return json.dumps(
        {
            f"card{index}": {
                "VRAM Total Memory (B)": "206141652992",
                "VRAM Total Used Memory (B)": "297771008",
                "Card Series": "AMD Instinct MI300X OAM",
                "Card Model": "0x74a1",
                "Card Vendor": "Advanced Micro Devices, Inc. [AMD/ATI]",
                "Card SKU": "MI3SRIOV",
                "Subsystem ID": "0x74a1",
                "Device Rev": "0x00",
                "Node ID": str(index + 2),
                "GUID": str(47056 + index),
                "GFX Version": "gfx942",
            }
            for index in range(cards)
        }
    )


# A Radeon RX 7900 XT, verbatim from marimo-team/marimo#9237
# (`rocm-smi --showproductname --showuse --showmeminfo vram --json`).
RX_7900_XT = """{
  "card0": {
    "GPU use (%)": "0",
    "VRAM Total Memory (B)": "21458059264",
    "VRAM Total Used Memory (B)": "27856896",
    "Card Series": "Radeon RX 7900 XT",
    "Card Model": "0x744c",
    "Card Vendor": "Advanced Micro Devices, Inc. [AMD/ATI]",
    "Card SKU": "D70401XT",
    "Subsystem ID": "0x471e",
    "Device Rev": "0xcc",
    "Node ID": "1",
    "GUID": "26967",
    "GFX Version": "gfx1100"
  }
}
"""

# Older rocm-smi (1.4.x, ROCm 5) names the fields "Card series", "Card model", "Card vendor", "Card SKU"
# (ROCm/rocm_smi_lib, python_smi_tools/rocm_smi.py, showProductName) and takes the series from pci.ids: two MI100s
# print "Arcturus GL-XL [AMD Instinct MI100]", 0x0c34, D34316 (easybuilders/easybuild-framework#3978, its --csv
# has the same keys). That capture has no VRAM line: 34342961152 B is what rocm-smi prints for other 32 GB AMD cards
# (an MI50, a Radeon Pro W6800) in public captures, and the MI100 is a 32 GB card.
MI100_ROCM5 = json.dumps(
    {
        f"card{index}": {
            "VRAM Total Memory (B)": "34342961152",
            "VRAM Total Used Memory (B)": "7028736",
            "Card series": "Arcturus GL-XL [AMD Instinct MI100]",
            "Card model": "0x0c34",
            "Card vendor": "Advanced Micro Devices, Inc. [AMD/ATI]",
            "Card SKU": "D34316",
        }
        for index in range(2)
    }
)


def amd_smi_mi300x(cards: int) -> list[dict[str, object]]:
    """What `amd-smi static --asic --vram --json` prints for each GPU of an MI300X box."""
    # ROCm blog "Getting to Know Your GPU: A Deep Dive into AMD SMI" (Sep 2024, 8 x MI300X): `amd-smi static` shows
    # MARKET_NAME MI300X-O, DEVICE_ID 0x74a1, and `amd-smi static --json | jq '.[0]["vram"]'` gives the vram object
    # below. Keys as amdsmi_cli/amdsmi_commands.py builds them (ROCm/amdsmi): {"gpu": N, "asic": {...}, "vram": {...}}.
    return [
        {
            "gpu": index,
            "asic": {
                "market_name": "MI300X-O",
                "vendor_id": "0x1002",
                "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]",
                "subvendor_id": "0x1002",
                "device_id": "0x74a1",
                "rev_id": "0x00",
                "asic_serial": "0xAF54E92B0A5D57C8",
                "oam_id": index,
            },
            "vram": {"type": "HBM", "vendor": "N/A", "size": {"value": 196592, "unit": "MB"}},
        }
        for index in range(cards)
    ]


Install = Callable[..., None]


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Install:
    """Put a fake tool on PATH: its directory is the whole PATH, so a GPU runner's real nvidia-smi stays hidden."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", str(directory))

    def put(name: str, stdout: str, code: int = 0) -> None:
        tool = directory / name
        tool.write_text(FAKE.format(python=sys.executable, arguments=ARGUMENTS[name], stdout=stdout, code=code))
        tool.chmod(0o755)

    return put


def ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


CPU = [{"kind": "cpu", "memory_bytes": ram(), "count": 1}]


def test_eight_h100s_are_one_entry_of_eight(install: Install) -> None:
    install("nvidia-smi", H100 * 8)
    expected = [{"kind": "nvidia-h100-80gb-hbm3", "memory_bytes": 81559 * MIB, "count": 8}]
    assert detected() == expected
    assert reported() == expected


def test_a_mixed_nvidia_box_gives_one_entry_per_model(install: Install) -> None:
    install("nvidia-smi", A100 + L4 + A100)
    assert detected() == [
        {"kind": "nvidia-a100-sxm4-80gb", "memory_bytes": 81920 * MIB, "count": 2},
        {"kind": "nvidia-l4", "memory_bytes": 23034 * MIB, "count": 1},
    ]


def test_nvidia_is_asked_before_amd(install: Install) -> None:
    install("nvidia-smi", L4)
    install("rocm-smi", rocm_smi_mi300x(1))
    assert detected() == [{"kind": "nvidia-l4", "memory_bytes": 23034 * MIB, "count": 1}]


def test_a_unified_memory_gpu_reports_the_machines_ram(install: Install) -> None:
    install("nvidia-smi", GB10)
    assert detected() == [{"kind": "nvidia-gb10", "memory_bytes": ram(), "count": 1}]


def test_an_mi300x_box_through_rocm_smi(install: Install) -> None:
    install("rocm-smi", rocm_smi_mi300x(8))
    expected = [{"kind": "amd-instinct-mi300x-oam", "memory_bytes": 206141652992, "count": 8}]
    assert detected() == expected
    assert reported() == expected


def test_rocm_smi_as_a_radeon_prints_it(install: Install) -> None:
    install("rocm-smi", RX_7900_XT)
    assert detected() == [{"kind": "amd-radeon-rx-7900-xt", "memory_bytes": 21458059264, "count": 1}]


def test_older_rocm_smi_field_names_and_pci_ids_series(install: Install) -> None:
    install("rocm-smi", MI100_ROCM5)
    assert detected() == [{"kind": "amd-instinct-mi100", "memory_bytes": 34342961152, "count": 2}]


def test_rocm_smi_system_entry_is_not_a_device(install: Install) -> None:
    # Driver-wide fields go under "system" (rocm_smi.py, printSysLog), e.g. `rocm-smi --showdriverversion` on an
    # MI100 host (easybuilders/easybuild-framework#3978).
    cards = json.loads(rocm_smi_mi300x(2))
    install("rocm-smi", json.dumps({**cards, "system": {"Driver version": "4.18.0-348.12.2.el8_5.x86_64"}}))
    assert detected() == [{"kind": "amd-instinct-mi300x-oam", "memory_bytes": 206141652992, "count": 2}]


def test_a_card_without_a_series_is_named_by_its_device_id(install: Install) -> None:
    # rocm-smi prints "N/A" where it cannot read the market name (rocm_smi.py, getDeviceName).
    cards = json.loads(rocm_smi_mi300x(1))
    cards["card0"]["Card Series"] = "N/A"
    install("rocm-smi", json.dumps(cards))
    assert detected() == [{"kind": "amd-0x74a1", "memory_bytes": 206141652992, "count": 1}]


def test_an_mi300x_box_through_amd_smi_list_output(install: Install) -> None:
    install("amd-smi", json.dumps(amd_smi_mi300x(8), indent=4))
    # 196592 MiB is the 206141652992 bytes rocm-smi prints for the same model: amd-smi's "MB" is MiB.
    assert detected() == [{"kind": "amd-mi300x-o", "memory_bytes": 206141652992, "count": 8}]


def test_amd_smi_gpu_data_output(install: Install) -> None:
    # Newer amd-smi wraps the same entries (amdsmi_cli/amdsmi_logger.py, combine_arrays_to_json; AMD's rocFFT reads
    # static_data["gpu_data"] in ROCm/rocm-libraries, projects/rocfft/scripts/perf/perflib/specs.py).
    wrapped = {"cpu_data": [], "core_data": [], "gpu_data": amd_smi_mi300x(4)}
    install("amd-smi", json.dumps(wrapped, indent=4))
    assert detected() == [{"kind": "amd-mi300x-o", "memory_bytes": 206141652992, "count": 4}]


def test_rocm_smi_is_asked_before_amd_smi(install: Install) -> None:
    install("rocm-smi", rocm_smi_mi300x(8))
    install("amd-smi", json.dumps(amd_smi_mi300x(8)))
    assert detected()[0]["kind"] == "amd-instinct-mi300x-oam"


def test_amd_smi_answers_when_rocm_smi_fails(install: Install) -> None:
    install("rocm-smi", "", code=1)
    install("amd-smi", json.dumps(amd_smi_mi300x(2)))
    assert detected() == [{"kind": "amd-mi300x-o", "memory_bytes": 206141652992, "count": 2}]


def test_amd_smi_without_vram_size_is_not_a_device(install: Install) -> None:
    # amd-smi fills "N/A" where the library call failed (amdsmi_commands.py, vram_info_dict defaults).
    gpus = amd_smi_mi300x(1)
    gpus[0]["vram"] = {"type": "N/A", "vendor": "N/A", "size": "N/A", "bit_width": "N/A", "max_bandwidth": "N/A"}
    install("amd-smi", json.dumps(gpus))
    assert detected() == CPU


@pytest.mark.parametrize(
    ("tool", "stdout", "code"),
    [
        pytest.param("nvidia-smi", NVML_MISMATCH, 18, id="nvidia-smi-fails"),
        pytest.param("nvidia-smi", "no comma here\n, 81559\nNVIDIA H100 80GB HBM3, lots\n", 0, id="nvidia-smi-garbage"),
        pytest.param("rocm-smi", rocm_smi_mi300x(8), 2, id="rocm-smi-fails"),
        pytest.param("rocm-smi", '{"card0": {"VRAM Total', 0, id="rocm-smi-cut-short"),
        pytest.param("rocm-smi", '["card0"]', 0, id="rocm-smi-not-an-object"),
        pytest.param("rocm-smi", '{"card0": {"Card Series": "AMD Instinct MI300X OAM"}}', 0, id="rocm-smi-no-vram"),
        pytest.param("amd-smi", "not json\n", 0, id="amd-smi-not-json"),
        pytest.param("amd-smi", '{"gpu_data": "N/A"}', 0, id="amd-smi-no-list"),
        pytest.param("amd-smi", json.dumps(amd_smi_mi300x(8)), 1, id="amd-smi-fails"),
    ],
)
def test_a_broken_tool_falls_back_to_the_cpu(install: Install, tool: str, stdout: str, code: int) -> None:
    install(tool, stdout, code)
    assert detected() == CPU


def test_no_tools_is_the_cpu(install: Install) -> None:
    assert ram() > 0
    assert detected() == CPU
    assert reported() == CPU


def test_a_tool_that_is_not_executable_is_skipped(install: Install, tmp_path: Path) -> None:
    install("nvidia-smi", H100)
    (tmp_path / "bin" / "nvidia-smi").chmod(0o644)
    assert detected() == CPU
