# The installer scenarios that matter most, on real Windows (the windows workflow runs one per step,
# after build_windows.ps1; installer/check_wine.sh runs the full set under Wine):
#   powershell -File installer\check_windows_install.ps1 -Scenario install|upgrade|upgrade-running|uninstall
# install: silent install of dist\Phoenix-Setup-<version>.exe, files, Apps & features values, Open-with
#          commands, shortcuts, and the installed Phoenix.exe --self-test.
# upgrade: a second installer (same app, version 99.0.0, compiled here) over it; settings kept.
# upgrade-running: with Phoenix running, the silent installer must fail (exit 2) and change nothing.
# uninstall: silent uninstall; program, shortcuts and registry entries gone, settings kept.
param([Parameter(Mandatory)][ValidateSet("install", "upgrade", "upgrade-running", "uninstall")][string]$Scenario)
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..")

$py = ".venv\Scripts\python.exe"
$version = & $py -c "import phoenix_gui; print(phoenix_gui.__version__)"
$dir = Join-Path $env:LOCALAPPDATA "Programs\Phoenix"
$uninstKey = "HKCU:\Software\Microsoft\Windows\CurrentVersion\Uninstall\Phoenix"
$settings = Join-Path $env:LOCALAPPDATA "phoenix\settings.json"
$startMenu = Join-Path $env:APPDATA "Microsoft\Windows\Start Menu\Programs\Phoenix"
$upgradeVersion = "99.0.0"

function Check([string]$what, [bool]$ok, [string]$detail = "") {
    if (-not $ok) { throw "FAILED: $what $detail" }
    Write-Host "ok   $what"
}
function Run([string]$exe, [string[]]$arguments) {
    (Start-Process -FilePath $exe -ArgumentList $arguments -Wait -PassThru).ExitCode
}
function Value([string]$key, [string]$name) { (Get-ItemProperty -Path $key -ErrorAction SilentlyContinue).$name }
function DisplayVersion { Value $uninstKey "DisplayVersion" }

switch ($Scenario) {
    "install" {
        New-Item -ItemType Directory -Force (Split-Path $settings) | Out-Null
        Set-Content -Path $settings -Value '{"kept": true}'  # stands for the user's settings
        $rc = Run "dist\Phoenix-Setup-$version.exe" @("/S")
        Check "silent install exits 0" ($rc -eq 0) "(exit $rc)"
        Check "Phoenix.exe, _internal, Uninstall.exe" ((Test-Path "$dir\Phoenix.exe") -and (Test-Path "$dir\_internal") -and (Test-Path "$dir\Uninstall.exe"))
        Check "DisplayVersion is $version" ((DisplayVersion) -eq $version) "($(DisplayVersion))"
        Check "InstallLocation" ((Value $uninstKey "InstallLocation") -eq $dir)
        Check "UninstallString is quoted" ((Value $uninstKey "UninstallString") -eq "`"$dir\Uninstall.exe`"")
        $installedKb = [int]((Get-ChildItem "$dir" -Recurse -File | Measure-Object Length -Sum).Sum / 1024)
        $est = [int](Value $uninstKey "EstimatedSize")
        Check "EstimatedSize is what was installed" ([Math]::Abs($est - $installedKb) -lt 1024) "($est KB vs $installedKb KB)"
        $cmd = (Get-ItemProperty "HKCU:\Software\Classes\Phoenix.gguf\shell\open\command").'(default)'
        Check "Open with .gguf quotes the app and the file" ($cmd -eq "`"$dir\Phoenix.exe`" `"%1`"") "($cmd)"
        Check "Start menu shortcuts" ((Test-Path "$startMenu\Phoenix.lnk") -and (Test-Path "$startMenu\Phoenix (demo).lnk"))
        $rc = Run "$dir\Phoenix.exe" @("--self-test")
        Check "the installed Phoenix.exe passes --self-test" ($rc -eq 0) "(exit $rc)"
    }
    "upgrade" {
        $makensis = (Get-Command makensis -ErrorAction SilentlyContinue).Source
        if (-not $makensis) { $makensis = "${env:ProgramFiles(x86)}\NSIS\makensis.exe" }
        $fv = & $py installer\file_version.py $upgradeVersion
        & $makensis /V2 "/DVERSION=$upgradeVersion" "/DFILEVERSION=$fv" "/DDIST=$PWD\dist\Phoenix" "/DOUTFILE=$PWD\dist\upgrade-check.exe" installer\phoenix.nsi
        if ($LASTEXITCODE -ne 0) { throw "makensis failed" }
        $rc = Run "dist\upgrade-check.exe" @("/S")
        Check "silent upgrade exits 0" ($rc -eq 0) "(exit $rc)"
        Check "DisplayVersion is $upgradeVersion" ((DisplayVersion) -eq $upgradeVersion) "($(DisplayVersion))"
        Check "the program is whole" ((Test-Path "$dir\Phoenix.exe") -and (Test-Path "$dir\_internal"))
        Check "settings kept" (Test-Path $settings)
    }
    "upgrade-running" {
        $before = DisplayVersion
        $app = Start-Process -FilePath "$dir\Phoenix.exe" -ArgumentList "--demo" -PassThru
        Start-Sleep -Seconds 8
        try {
            Check "Phoenix is running" (-not $app.HasExited)
            $rc = Run "dist\Phoenix-Setup-$version.exe" @("/S")
            Check "silent install over a running Phoenix fails (exit 2)" ($rc -eq 2) "(exit $rc)"
            Check "DisplayVersion unchanged" ((DisplayVersion) -eq $before) "($(DisplayVersion))"
            $rc = Run "$dir\Uninstall.exe" @("/S", "_?=$dir")  # in place, so its exit code is seen
            Check "silent uninstall of a running Phoenix fails (exit 2)" ($rc -eq 2) "(exit $rc)"
            Check "the program and its entry stay" ((Test-Path "$dir\Phoenix.exe") -and (Test-Path $uninstKey))
        } finally {
            if (-not $app.HasExited) { Stop-Process -Id $app.Id -Force; $app.WaitForExit() }
        }
    }
    "uninstall" {
        $rc = Run "$dir\Uninstall.exe" @("/S")
        Check "silent uninstall exits 0" ($rc -eq 0) "(exit $rc)"
        # the uninstaller goes on from a copy in %TEMP%: wait for it to finish
        for ($i = 0; $i -lt 120 -and ((Test-Path $uninstKey) -or (Test-Path "$dir\Phoenix.exe")); $i++) { Start-Sleep -Milliseconds 500 }
        Check "the program folder is gone" (-not (Test-Path $dir))
        Check "the Apps & features entry is gone" (-not (Test-Path $uninstKey))
        Check "Open-with classes gone, no empty OpenWithProgids" (-not (Test-Path "HKCU:\Software\Classes\Phoenix.gguf") -and -not (Test-Path "HKCU:\Software\Classes\.gguf\OpenWithProgids"))
        Check "Start menu folder gone" (-not (Test-Path $startMenu))
        Check "settings kept" (Test-Path $settings)
    }
}
