using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Colo.Cli;

/// <summary>A long-running child process (a daemon or the client workload) whose output goes to a log file.</summary>
internal sealed partial class ChildProcess : IDisposable
{
    private readonly Process _process;
    private readonly StreamWriter _log;

    private ChildProcess(Process process, StreamWriter log)
    {
        _process = process;
        _log = log;
    }

    public int Pid => _process.Id;

    public string Name { get; private init; } = "";

    public bool HasExited => _process.HasExited;

    public int ExitCode => _process.ExitCode;

    public Task WaitForExitAsync(CancellationToken ct) => _process.WaitForExitAsync(ct);

    /// <summary>Starts <paramref name="psi"/> with stdout and stderr appended to <paramref name="logPath"/>.</summary>
    public static ChildProcess Start(string name, ProcessStartInfo psi, string logPath)
    {
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.RedirectStandardInput = false;
        psi.UseShellExecute = false;
        psi.Environment["DOTNET_EnableDiagnostics"] = "0"; // no IPC files left in /tmp if the child is killed
        var log = new StreamWriter(logPath, append: true) { AutoFlush = true };
        var p = new Process { StartInfo = psi, EnableRaisingEvents = true };
        p.OutputDataReceived += (_, e) => { if (e.Data != null) lock (log) log.WriteLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (log) log.WriteLine(e.Data); };
        if (!p.Start())
            throw new InvalidOperationException($"could not start {name}");
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return new ChildProcess(p, log) { Name = name };
    }

    /// <summary>The command line to run this same CLI again (apphost or <c>dotnet colo.dll</c>).</summary>
    public static (string File, string[] Prefix) Self()
    {
        string exe = Environment.ProcessPath ?? "dotnet";
        if (Path.GetFileNameWithoutExtension(exe) == "dotnet")
            return (exe, [typeof(ChildProcess).Assembly.Location]);
        return (exe, []);
    }

    /// <summary>SIGTERM, then SIGKILL after <paramref name="grace"/>; by PID only.</summary>
    public async Task StopAsync(TimeSpan grace)
    {
        if (_process.HasExited)
            return;
        Signal(_process.Id, 15);
        try
        {
            await _process.WaitForExitAsync().WaitAsync(grace);
        }
        catch (TimeoutException)
        {
            Signal(_process.Id, 9);
            try
            {
                await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(5));
            }
            catch (TimeoutException)
            {
            }
        }
    }

    /// <summary>Sends signal <paramref name="signal"/> to <paramref name="pid"/>; false when it does not exist.</summary>
    public static bool Signal(int pid, int signal) => pid > 0 && kill(pid, signal) == 0;

    /// <summary>True when a process with this PID exists.</summary>
    public static bool Exists(int pid) => pid > 0 && kill(pid, 0) == 0;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int kill(int pid, int sig);

    public void Dispose()
    {
        _process.Dispose();
        lock (_log)
            _log.Dispose();
    }
}
