; Phoenix installer (NSIS). Per-user install, no admin rights needed.
;   makensis -DVERSION=0.2.0rc1 -DFILEVERSION=0.2.0.30001 -DDIST=..\dist\Phoenix -DOUTFILE=..\dist\Phoenix-Setup-0.2.0rc1.exe installer\phoenix.nsi
; FILEVERSION (four numbers) comes from `python installer/file_version.py VERSION`: Windows wants four
; numbers, a PEP 440 version may be 0.2.0rc1. Checked under Wine by installer/check_wine.sh.
; NSIS rather than Inno Setup: it compiles on Linux too (Debian's nsis package), so CI checks this
; script on every change, and its per-user (HKCU) install needs no elevation.

Unicode true
!include "MUI2.nsh"
!include "FileFunc.nsh"

!ifndef VERSION
  !define VERSION "0.1.0"
!endif
!ifndef FILEVERSION
  !error "FILEVERSION is missing: pass -DFILEVERSION=<output of python installer/file_version.py VERSION>"
!endif
!ifndef DIST
  !define DIST "..\dist\Phoenix"
!endif
!ifndef OUTFILE
  !define OUTFILE "..\dist\Phoenix-Setup-${VERSION}.exe"
!endif
!define APP "Phoenix"
!define EXE "Phoenix.exe"
!define UNINST_KEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\${APP}"

Name "${APP} ${VERSION}"
OutFile "${OUTFILE}"
InstallDir "$LOCALAPPDATA\Programs\${APP}"
InstallDirRegKey HKCU "Software\${APP}" "InstallDir"
RequestExecutionLevel user
!ifdef FAST
  SetCompress off  ; CI only checks that the script compiles
!else
  SetCompressor /SOLID lzma
!endif
!define MUI_ICON "..\phoenix_gui\data\icons\phoenix.ico"
!define MUI_UNICON "..\phoenix_gui\data\icons\phoenix.ico"
!define MUI_ABORTWARNING
!define MUI_FINISHPAGE_RUN "$INSTDIR\${EXE}"
!define MUI_FINISHPAGE_RUN_TEXT "Start Phoenix now"

!insertmacro MUI_PAGE_WELCOME
!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_COMPONENTS
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_PAGE_FINISH
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"

VIProductVersion "${FILEVERSION}"
VIAddVersionKey "ProductName" "${APP}"
VIAddVersionKey "FileDescription" "${APP} installer"
VIAddVersionKey "FileVersion" "${VERSION}"
VIAddVersionKey "ProductVersion" "${VERSION}"
VIAddVersionKey "LegalCopyright" "Phoenix contributors"

; A running Phoenix.exe (and its _internal DLLs) cannot be replaced or deleted: touching the files
; anyway leaves half an install. Windows refuses to open a running program's file for writing, so
; that is the test; Retry after closing it, Cancel stops with nothing changed (/S: exit code 2).
!macro CHECK_NOT_RUNNING UN
Function ${UN}CheckNotRunning
  retry:
    IfFileExists "$INSTDIR\${EXE}" 0 free
    ClearErrors
    FileOpen $0 "$INSTDIR\${EXE}" a
    IfErrors running
    FileClose $0
    Goto free
  running:
    MessageBox MB_RETRYCANCEL|MB_ICONEXCLAMATION "Phoenix is running from $INSTDIR.$\r$\nClose it, then click Retry." /SD IDCANCEL IDRETRY retry
    DetailPrint "Phoenix is running from $INSTDIR: nothing was changed."
    SetErrorLevel 2
    Abort
  free:
FunctionEnd
!macroend
!insertmacro CHECK_NOT_RUNNING ""
!insertmacro CHECK_NOT_RUNNING "un."

Section "Phoenix (required)" SecMain
  SectionIn RO
  Call CheckNotRunning
  ; Upgrade: remove the previous version's program files first. Settings live elsewhere
  ; (%LOCALAPPDATA%\phoenix) and are kept.
  IfFileExists "$INSTDIR\${EXE}" 0 +3
    RMDir /r "$INSTDIR\_internal"
    Delete "$INSTDIR\${EXE}"
  SetOutPath "$INSTDIR"
  File /r "${DIST}\*"
  WriteUninstaller "$INSTDIR\Uninstall.exe"
  WriteRegStr HKCU "Software\${APP}" "InstallDir" "$INSTDIR"
  WriteRegStr HKCU "Software\${APP}" "Version" "${VERSION}"
  ; Apps & features
  WriteRegStr HKCU "${UNINST_KEY}" "DisplayName" "${APP}"
  WriteRegStr HKCU "${UNINST_KEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKCU "${UNINST_KEY}" "Publisher" "Phoenix contributors"
  WriteRegStr HKCU "${UNINST_KEY}" "DisplayIcon" "$INSTDIR\${EXE}"
  WriteRegStr HKCU "${UNINST_KEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKCU "${UNINST_KEY}" "UninstallString" '"$INSTDIR\Uninstall.exe"'
  WriteRegStr HKCU "${UNINST_KEY}" "QuietUninstallString" '"$INSTDIR\Uninstall.exe" /S'
  WriteRegDWORD HKCU "${UNINST_KEY}" "NoModify" 1
  WriteRegDWORD HKCU "${UNINST_KEY}" "NoRepair" 1
  ; What this installer put there (the section's files, known when it was compiled, plus the
  ; uninstaller), not the whole folder: it may hold the user's own files.
  SectionGetSize ${SecMain} $0
  ${GetSize} "$INSTDIR" "/M=Uninstall.exe /S=0K /G=0" $1 $2 $3
  IntOp $0 $0 + $1
  WriteRegDWORD HKCU "${UNINST_KEY}" "EstimatedSize" $0
  CreateDirectory "$SMPROGRAMS\${APP}"
  CreateShortcut "$SMPROGRAMS\${APP}\${APP}.lnk" "$INSTDIR\${EXE}" "" "$INSTDIR\${EXE}" 0
  CreateShortcut "$SMPROGRAMS\${APP}\${APP} (demo).lnk" "$INSTDIR\${EXE}" "--demo" "$INSTDIR\${EXE}" 0
SectionEnd

Section "Desktop shortcut" SecDesktop
  CreateShortcut "$DESKTOP\${APP}.lnk" "$INSTDIR\${EXE}" "" "$INSTDIR\${EXE}" 0
SectionEnd

Section "Open-with entries" SecAssoc  ; short: the components list cuts longer names
  ; "Open with" entries, per user; the user's current default program is left alone.
  WriteRegStr HKCU "Software\Classes\Phoenix.gguf" "" "GGUF model"
  WriteRegStr HKCU "Software\Classes\Phoenix.gguf\DefaultIcon" "" "$INSTDIR\${EXE},0"
  WriteRegStr HKCU "Software\Classes\Phoenix.gguf\shell\open\command" "" '"$INSTDIR\${EXE}" "%1"'
  WriteRegStr HKCU "Software\Classes\.gguf\OpenWithProgids" "Phoenix.gguf" ""
  WriteRegStr HKCU "Software\Classes\Phoenix.kcpps" "" "koboldcpp configuration"
  WriteRegStr HKCU "Software\Classes\Phoenix.kcpps\DefaultIcon" "" "$INSTDIR\${EXE},0"
  WriteRegStr HKCU "Software\Classes\Phoenix.kcpps\shell\open\command" "" '"$INSTDIR\${EXE}" "%1"'
  WriteRegStr HKCU "Software\Classes\.kcpps\OpenWithProgids" "Phoenix.kcpps" ""
  WriteRegStr HKCU "Software\Classes\Applications\${EXE}\shell\open\command" "" '"$INSTDIR\${EXE}" "%1"'
  WriteRegStr HKCU "Software\Classes\Applications\${EXE}\SupportedTypes" ".gguf" ""
  WriteRegStr HKCU "Software\Classes\Applications\${EXE}\SupportedTypes" ".kcpps" ""
  System::Call 'shell32::SHChangeNotify(i 0x08000000, i 0, p 0, p 0)'
SectionEnd

LangString DESC_Main ${LANG_ENGLISH} "The Phoenix wizard."
LangString DESC_Desktop ${LANG_ENGLISH} "A Phoenix icon on the desktop."
LangString DESC_Assoc ${LANG_ENGLISH} "Open .gguf models and .kcpps configs with Phoenix: adds it to their 'Open with' list (your default program is kept)."
!insertmacro MUI_FUNCTION_DESCRIPTION_BEGIN
  !insertmacro MUI_DESCRIPTION_TEXT ${SecMain} $(DESC_Main)
  !insertmacro MUI_DESCRIPTION_TEXT ${SecDesktop} $(DESC_Desktop)
  !insertmacro MUI_DESCRIPTION_TEXT ${SecAssoc} $(DESC_Assoc)
!insertmacro MUI_FUNCTION_DESCRIPTION_END

Section "Uninstall"
  Call un.CheckNotRunning
  RMDir /r "$INSTDIR\_internal"
  Delete "$INSTDIR\${EXE}"
  Delete "$INSTDIR\Uninstall.exe"
  RMDir "$INSTDIR"
  Delete "$SMPROGRAMS\${APP}\${APP}.lnk"
  Delete "$SMPROGRAMS\${APP}\${APP} (demo).lnk"
  RMDir "$SMPROGRAMS\${APP}"
  Delete "$DESKTOP\${APP}.lnk"
  DeleteRegKey HKCU "${UNINST_KEY}"
  DeleteRegKey HKCU "Software\${APP}"
  DeleteRegKey HKCU "Software\Classes\Phoenix.gguf"
  DeleteRegKey HKCU "Software\Classes\Phoenix.kcpps"
  DeleteRegValue HKCU "Software\Classes\.gguf\OpenWithProgids" "Phoenix.gguf"
  DeleteRegValue HKCU "Software\Classes\.kcpps\OpenWithProgids" "Phoenix.kcpps"
  ; the keys only when nothing else (another program's entry, a default) is left in them
  DeleteRegKey /ifempty HKCU "Software\Classes\.gguf\OpenWithProgids"
  DeleteRegKey /ifempty HKCU "Software\Classes\.kcpps\OpenWithProgids"
  DeleteRegKey /ifempty HKCU "Software\Classes\.gguf"
  DeleteRegKey /ifempty HKCU "Software\Classes\.kcpps"
  DeleteRegKey HKCU "Software\Classes\Applications\${EXE}"
  System::Call 'shell32::SHChangeNotify(i 0x08000000, i 0, p 0, p 0)'
  ; user settings in %LOCALAPPDATA%\phoenix are kept on purpose
SectionEnd
