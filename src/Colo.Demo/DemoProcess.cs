using System.ComponentModel;
using System.Diagnostics;
using System.Text;

namespace Colo.Demo;

/// <summary>Outcome of a finished (or killed) child process.</summary>
/// <param name="ExitCode">Exit code; -1 when the process was killed because it overran its timeout.</param>
/// <param name="StdOut">Everything the process wrote to standard output (UTF-8).</param>
/// <param name="StdErr">Everything the process wrote to standard error (UTF-8).</param>
/// <param name="TimedOut">True when the process overran its timeout and was killed by PID.</param>
public sealed record ProcessResult(int ExitCode, string StdOut, string StdErr, bool TimedOut);

/// <summary>
/// Runs short-lived helper commands (<c>ip</c>, <c>sysctl</c>, <c>redis-benchmark</c>) with a timeout,
/// capturing their output. A process that overruns is killed by its own PID (with its children).
/// </summary>
public static class DemoProcess
{
    /// <summary>
    /// Starts <paramref name="startInfo"/> (output redirected, no shell), waits for it to exit and returns its output.
    /// </summary>
    /// <param name="startInfo">What to run; <c>RedirectStandardOutput/Error</c> and <c>UseShellExecute</c> are overridden.</param>
    /// <param name="timeout">Longest time the process may run; on overrun it is killed and the result has <c>TimedOut = true</c>.</param>
    /// <param name="cancellationToken">Cancels the wait; the process is killed first.</param>
    /// <returns>Exit code and captured output.</returns>
    /// <exception cref="InvalidOperationException">The executable could not be started (e.g. not installed).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (the process has been killed).</exception>
    public static async Task<ProcessResult> RunAsync(ProcessStartInfo startInfo, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(startInfo);
        startInfo.UseShellExecute = false;
        startInfo.RedirectStandardOutput = true;
        startInfo.RedirectStandardError = true;
        startInfo.RedirectStandardInput = false;
        startInfo.StandardOutputEncoding = Encoding.UTF8;
        startInfo.StandardErrorEncoding = Encoding.UTF8;

        using var process = new Process { StartInfo = startInfo };
        try
        {
            if (!process.Start())
                throw new InvalidOperationException($"could not start {Describe(startInfo)}");
        }
        catch (Win32Exception ex)
        {
            throw new InvalidOperationException($"could not start {Describe(startInfo)}: {ex.Message}", ex);
        }

        Task<string> stdout = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
        Task<string> stderr = process.StandardError.ReadToEndAsync(CancellationToken.None);
        bool timedOut = false;
        using (var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
        {
            cts.CancelAfter(timeout);
            try
            {
                await process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                Kill(process);
                if (cancellationToken.IsCancellationRequested)
                    throw;
                timedOut = true;
            }
        }

        // Output pipes close once the process (and any child holding them) is gone.
        string output = await WithDeadline(stdout, TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        string error = await WithDeadline(stderr, TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        int exitCode = timedOut ? -1 : process.ExitCode;
        return new ProcessResult(exitCode, output, error, timedOut);
    }

    /// <summary>Renders a start info as a shell-like command line for messages (no quoting guarantees).</summary>
    /// <param name="startInfo">The command.</param>
    /// <returns>e.g. <c>ip -n colo-1a2b-pri link set lo up</c>.</returns>
    public static string Describe(ProcessStartInfo startInfo)
    {
        ArgumentNullException.ThrowIfNull(startInfo);
        var sb = new StringBuilder(startInfo.FileName);
        foreach (string arg in startInfo.ArgumentList)
        {
            sb.Append(' ');
            sb.Append(arg.Length == 0 || arg.Contains(' ') ? $"'{arg}'" : arg);
        }
        if (startInfo.ArgumentList.Count == 0 && !string.IsNullOrEmpty(startInfo.Arguments))
            sb.Append(' ').Append(startInfo.Arguments);
        return sb.ToString();
    }

    internal static void Kill(Process process)
    {
        try
        {
            if (!process.HasExited)
                process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
            // Already exited.
        }
        catch (Win32Exception)
        {
            // Raced with exit.
        }
        try
        {
            process.WaitForExit(5000);
        }
        catch (InvalidOperationException)
        {
        }
    }

    private static async Task<string> WithDeadline(Task<string> task, TimeSpan deadline)
    {
        Task done = await Task.WhenAny(task, Task.Delay(deadline)).ConfigureAwait(false);
        return done == task ? await task.ConfigureAwait(false) : string.Empty;
    }
}
