# Build Phoenix for Windows on a clean machine with Python 3.10+ (and NSIS, installed if missing):
#   powershell -ExecutionPolicy Bypass -File installer\build_windows.ps1 [-SkipTests]
# Produces dist\Phoenix\Phoenix.exe (one folder) and dist\Phoenix-Setup-<version>.exe.
param([switch]$SkipTests)
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..")

py -3 -m venv .venv
$py = ".venv\Scripts\python.exe"
& $py -m pip install -q --upgrade pip
if (-not $SkipTests) {
    $env:LLAMA_CPP_BUILD_JOBS = "2"
    $env:CMAKE_ARGS = "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DGGML_NATIVE=OFF"
    & $py -m pip install -q -e ".[test]"
    & $py -m pytest -q
    if ($LASTEXITCODE -ne 0) { throw "tests failed" }
} else {
    & $py -m pip install -q -e .
}
& $py -m pip install -q "pyinstaller>=6.3"
& $py -m PyInstaller installer\phoenix.spec --noconfirm --distpath dist --workpath build\pyi
if ($LASTEXITCODE -ne 0) { throw "PyInstaller failed" }

# The app is windowed: the self-test reports through its exit code.
$p = Start-Process -FilePath "dist\Phoenix\Phoenix.exe" -ArgumentList "--self-test" -Wait -PassThru -NoNewWindow
if ($p.ExitCode -ne 0) { throw "frozen self-test failed with exit code $($p.ExitCode)" }
Write-Host "frozen self-test OK"

$makensis = (Get-Command makensis -ErrorAction SilentlyContinue).Source
if (-not $makensis) { $makensis = "${env:ProgramFiles(x86)}\NSIS\makensis.exe" }
if (-not (Test-Path $makensis)) {
    winget install --id NSIS.NSIS -e --silent --accept-package-agreements --accept-source-agreements
    $makensis = "${env:ProgramFiles(x86)}\NSIS\makensis.exe"
}
$version = & $py -c "import phoenix_gui; print(phoenix_gui.__version__)"
$fileversion = & $py installer\file_version.py $version
if ($LASTEXITCODE -ne 0) { throw "no Windows file version for $version" }
& $makensis /V2 "/DVERSION=$version" "/DFILEVERSION=$fileversion" "/DDIST=$PWD\dist\Phoenix" "/DOUTFILE=$PWD\dist\Phoenix-Setup-$version.exe" installer\phoenix.nsi
if ($LASTEXITCODE -ne 0) { throw "makensis failed" }
Write-Host "built dist\Phoenix-Setup-$version.exe"
