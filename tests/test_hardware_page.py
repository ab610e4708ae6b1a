"""The hardware page, driven through its real widgets (pytest-qt, offscreen)."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QToolButton  # noqa: E402

from phoenix_gui.config import UserSettings, save_settings  # noqa: E402
from phoenix_gui.hardware import demo_rig_path, detect_rig  # noqa: E402
from phoenix_gui.hardware.rigfile import rigs_dir  # noqa: E402
from phoenix_gui.ui.app import make_wizard  # noqa: E402
from phoenix_gui.ui.pages.hardware import NAME, ORDER, THIS_PC, USE, USE_THIS_PC, VRAM  # noqa: E402

CPU_ONLY_RIG = 'name = "laptop"\n[system]\nram_gib = 32\nram_bandwidth_gbs = 40\n'


def shown(qtbot, **kw):
    w = make_wizard(**{"persist": False, "measure": False, **kw})
    qtbot.addWidget(w)
    w.resize(1280, 860)
    w.show()
    return w, w.page("hardware")


@pytest.fixture
def demo(qtbot):
    return shown(qtbot, demo=True)


def order_button(page, row: int, text: str) -> QToolButton:
    return next(b for b in page.table.cellWidget(row, ORDER).findChildren(QToolButton) if b.text() == text)


def no_gpu_machine():
    rig = detect_rig(measure_bandwidth=False)
    if rig.gpus:
        pytest.skip("this machine has NVIDIA GPUs")
    return rig


# --- item 1: a simulated rig is never "this PC" ---

def test_plain_start_after_a_demo_run_uses_this_pc(qtbot, config_dir):
    save_settings(UserSettings(rig_path=str(demo_rig_path())))  # what a --demo run used to leave behind
    w = make_wizard(persist=True, measure=False)
    qtbot.addWidget(w)
    w.show()
    page = w.page("hardware")
    assert not w.state.rig.simulated and w.state.rig_path is None
    assert page.heading.text().startswith(THIS_PC)
    assert page.this_pc.isVisible() and not page.this_pc.isEnabled()


def test_demo_rig_says_it_is_simulated_and_where_it_came_from(demo):
    w, page = demo
    assert page.heading.text() == "Simulated rig: Phoenix Cluster (from phoenix-cluster.toml)"
    assert THIS_PC not in page.heading.text() and "found" not in page.subTitle()
    assert page.this_pc.isVisible() and page.this_pc.isEnabled() and page.this_pc.text() == USE_THIS_PC


def test_use_this_pcs_hardware_detects_and_switches(demo, qtbot):
    w, page = demo
    qtbot.mouseClick(page.this_pc, Qt.LeftButton)
    qtbot.waitUntil(lambda: not w.state.rig.simulated, timeout=20000)
    assert w.state.rig_path is None
    assert page.heading.text().startswith(THIS_PC)
    assert not page.this_pc.isEnabled() and page.this_pc.text() == USE_THIS_PC
    assert page.table.rowCount() == len(w.state.rig.gpus)


def test_loading_a_rig_file_then_this_pc(demo, qtbot, tmp_path):
    w, page = demo
    path = rigs_dir() / "four-pascal-workstation.toml"
    assert page.load_rig_file(str(path))
    assert w.state.rig_path == str(path)
    assert page.heading.text() == "Simulated rig: Pascal workstation (from four-pascal-workstation.toml)"
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    assert not page.load_rig_file(str(bad))
    assert page.error.isVisible() and "bad.toml" in page.error.text()
    assert w.state.rig.name == "Pascal workstation"


# --- item 2: Space ticks the focused row ---

def test_space_on_the_focused_row_ticks_and_unticks(demo, qtbot):
    w, page = demo
    st = w.state
    gi = st.order[1]
    page.table.setFocus()
    page.table.setCurrentCell(1, NAME)  # any cell of the row, not only the tick box
    qtbot.keyClick(page.table, Qt.Key_Space)
    assert gi not in st.included and page.table.item(1, USE).checkState() == Qt.Unchecked
    assert gi not in st.devices
    assert page.table.item(1, NAME).data(Qt.ForegroundRole) is not None  # the left-out row is greyed
    qtbot.keyClick(page.table, Qt.Key_Space)
    assert page.table.item(1, NAME).data(Qt.ForegroundRole) is None
    assert gi in st.included and page.table.item(1, USE).checkState() == Qt.Checked


# --- item 3: identical cards ---

def test_identical_cards_show_index_and_pci_bus(demo):
    w, page = demo
    page.load_rig_file(str(rigs_dir() / "four-pascal-workstation.toml"))
    names = [page.table.item(r, NAME).text() for r in range(page.table.rowCount())]
    assert names[2] == "#2 GTX 1070\nPCI 0000:81:00.0"
    assert names[3] == "#3 GTX 1070\nPCI 0000:82:00.0"
    ups = [order_button(page, r, "▼").accessibleName() for r in (2, 3)]
    assert ups[0] != ups[1] and w.state.gpu_label(2) in ups[0]
    assert page.table.rowHeight(2) >= 2 * page.table.fontMetrics().height()  # both lines visible


# --- item 4: untick and re-tick keeps the split ---

@pytest.mark.parametrize("by", ["space", "tick"])
def test_untick_and_retick_restores_the_split(demo, qtbot, by):
    w, page = demo
    st = w.state
    a, b, c = st.devices
    st.set_share(a, 55.0)
    st.set_share(c, 12.5)
    before = {i: st.percent(i) for i in st.devices}
    row = st.order.index(b)
    item = page.table.item(row, USE)

    def toggle():
        if by == "space":
            page.table.setCurrentCell(row, NAME)
            qtbot.keyClick(page.table, Qt.Key_Space)
        else:  # what a mouse click on the box does
            item.setCheckState(Qt.Unchecked if item.checkState() == Qt.Checked else Qt.Checked)

    toggle()
    assert st.devices == [a, c]
    toggle()
    assert st.devices == [a, b, c]
    for i, p in before.items():
        assert st.percent(i) == pytest.approx(p, abs=1e-9)


# --- item 5: the no-GPU banner ---

def test_no_gpu_rig_file_banner_is_one_sentence(qtbot, tmp_path):
    path = tmp_path / "cpu.toml"
    path.write_text(CPU_ONLY_RIG)
    w, page = shown(qtbot, rig_path=str(path))
    assert page.banner.isVisible()
    assert page.banner.text() == ("No NVIDIA GPU in the simulated rig “laptop”, so Phoenix plans for the CPU and "
                                  "system RAM only.")
    assert not page.table.isVisible()


def test_detected_pc_without_nvidia_driver_banner_is_one_sentence(demo):
    w, page = demo
    rig = no_gpu_machine()
    w.state.set_rig(rig)
    text = page.banner.text()
    assert page.banner.isVisible() and text.startswith("No NVIDIA GPU was found in this PC because ")
    assert text.endswith(", so Phoenix plans for the CPU and system RAM only.")
    assert ". " not in text and text.lower().count("nvidia gpu") == 1 and text.count("Phoenix") == 1
    assert page.heading.text().startswith(THIS_PC)


def test_a_startup_notice_survives_refreshes(qtbot, config_dir):
    config_dir.mkdir(parents=True)
    (config_dir / "settings.json").write_text("{{{ garbage")
    w = make_wizard(demo=True, measure=False)
    qtbot.addWidget(w)
    w.show()
    page = w.page("hardware")
    w.state.move_gpu(w.state.order[0], 1)
    assert page.banner.isVisible() and "damaged" in page.banner.text()


# --- item 6: order buttons, and no rebuild on every change ---

def test_order_buttons_move_the_card_without_rebuilding_the_table(demo, qtbot):
    w, page = demo
    st = w.state
    first, second = st.order[0], st.order[1]
    bar, use = page.table.cellWidget(0, VRAM), page.table.item(0, USE)
    assert not order_button(page, 0, "▲").isEnabled()
    assert not order_button(page, page.table.rowCount() - 1, "▼").isEnabled()
    qtbot.mouseClick(order_button(page, 0, "▼"), Qt.LeftButton)
    assert st.order[:2] == [second, first] and st.devices[:2] == [second, first]
    assert page.table.item(1, NAME).text().startswith(f"#{first} ")
    assert page.table.currentRow() == 1  # the highlighted row follows the card
    qtbot.mouseClick(order_button(page, 1, "▲"), Qt.LeftButton)
    assert st.order[:2] == [first, second]
    page.table.setCurrentCell(0, NAME)
    qtbot.keyClick(page.table, Qt.Key_Space)  # a tick
    st.set_share(st.devices[0], 40.0)  # a split change the page does not follow
    st.set_context(2048)
    assert page.table.cellWidget(0, VRAM) is bar and page.table.item(0, USE) is use

