"""PyInstaller hook: the WebKit2 4.1 typelib and library for pywebview's GTK window (none in PyInstaller).
WebKitGTK's helper processes (WebKitWebProcess, WebKitNetworkProcess) are not bundled: they come from the
system's WebKitGTK (Debian: gir1.2-webkit2-4.1), which a Linux desktop has or installs."""

from PyInstaller.utils.hooks.gi import GiModuleInfo


def hook(hook_api):
    module_info = GiModuleInfo("WebKit2", "4.1", hook_api=hook_api)
    if not module_info.available:
        return
    binaries, datas, hiddenimports = module_info.collect_typelib_data()
    hook_api.add_datas(datas)
    hook_api.add_binaries(binaries)
    hook_api.add_imports(*hiddenimports)
