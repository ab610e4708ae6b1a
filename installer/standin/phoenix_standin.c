/* A stand-in for the frozen Phoenix.exe, for installer/check_wine.sh: the installer is checked
 * without building the real app on Windows. It appends one line to the log named by
 * PHOENIX_STANDIN_LOG (else %TEMP%\phoenix-standin.log): its version, then each argument after a tab,
 * so a check sees exactly what a shortcut or an "Open with" command passed.
 *   Phoenix.exe --wait-file PATH   stays running (holding its own file, like the real app) until
 *                                  PATH exists, at most two minutes.
 * Built with: x86_64-w64-mingw32-gcc -municode -O2 -s -DSTANDIN_VERSION=L\"0.1.0\" */
#include <stdio.h>
#include <wchar.h>
#include <windows.h>

#ifndef STANDIN_VERSION
#define STANDIN_VERSION L"0.0.0"
#endif

int wmain(int argc, wchar_t **argv)
{
    wchar_t path[4096];
    DWORD n = GetEnvironmentVariableW(L"PHOENIX_STANDIN_LOG", path, 4096);
    if (n == 0 || n >= 4096) {
        n = GetTempPathW(4096 - 32, path);
        if (n == 0 || n >= 4096 - 32)
            return 3;
        wcscat(path, L"phoenix-standin.log");
    }
    FILE *f = _wfopen(path, L"a, ccs=UTF-8");
    if (!f)
        return 4;
    fwprintf(f, L"%ls", STANDIN_VERSION);
    for (int i = 1; i < argc; i++)
        fwprintf(f, L"\t%ls", argv[i]);
    fwprintf(f, L"\n");
    fclose(f);
    if (argc == 3 && wcscmp(argv[1], L"--wait-file") == 0) {
        for (int i = 0; i < 1200 && GetFileAttributesW(argv[2]) == INVALID_FILE_ATTRIBUTES; i++)
            Sleep(100);
    }
    return 0;
}
