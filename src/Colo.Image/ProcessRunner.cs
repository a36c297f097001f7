using System.Diagnostics;
using System.Text;

namespace Colo.Image;

/// <summary>Result of an external command.</summary>
internal sealed record ProcessResult(int ExitCode, string StdOut, string StdErr);

/// <summary>Runs external commands with an argument list (no shell), a timeout and LC_ALL=C.</summary>
internal static class ProcessRunner
{
    /// <summary>
    /// Runs <paramref name="file"/> with <paramref name="args"/> and returns its exit code and output.
    /// Throws <see cref="ImageBuildException"/> (step = <paramref name="step"/>) when the program cannot be
    /// started or exceeds <paramref name="timeout"/> (the process tree is killed), and
    /// <see cref="OperationCanceledException"/> when <paramref name="ct"/> fires (process tree killed).
    /// A non-zero exit code is not an error here; callers decide.
    /// </summary>
    public static async Task<ProcessResult> RunAsync(string step, string file, IEnumerable<string> args,
        TimeSpan timeout, CancellationToken ct, string? workDir = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = workDir ?? Environment.CurrentDirectory,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["LC_ALL"] = "C";
        psi.Environment["LANG"] = "C";
        psi.Environment["DEBIAN_FRONTEND"] = "noninteractive";

        using var p = new Process { StartInfo = psi };
        try
        {
            if (!p.Start()) throw new ImageBuildException(step, $"could not start {file}");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new ImageBuildException(step, $"could not start {file}: {e.Message}", e);
        }
        p.StandardInput.Close();
        var so = p.StandardOutput.ReadToEndAsync(CancellationToken.None);
        var se = p.StandardError.ReadToEndAsync(CancellationToken.None);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout);
        try
        {
            await p.WaitForExitAsync(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            ct.ThrowIfCancellationRequested();
            throw new ImageBuildException(step,
                $"'{Describe(file, psi.ArgumentList)}' timed out after {timeout.TotalSeconds:0} s");
        }
        return new ProcessResult(p.ExitCode, await so.ConfigureAwait(false), await se.ConfigureAwait(false));
    }

    /// <summary>Like <see cref="RunAsync"/> but throws <see cref="ImageBuildException"/> on a non-zero exit code.</summary>
    public static async Task<ProcessResult> RunCheckedAsync(string step, string file, IEnumerable<string> args,
        TimeSpan timeout, CancellationToken ct, string? workDir = null)
    {
        var list = args.ToList();
        var r = await RunAsync(step, file, list, timeout, ct, workDir).ConfigureAwait(false);
        if (r.ExitCode != 0)
            throw new ImageBuildException(step,
                $"'{Describe(file, list)}' exited with {r.ExitCode}: {Tail(r.StdErr.Length > 0 ? r.StdErr : r.StdOut)}");
        return r;
    }

    internal static string Describe(string file, IEnumerable<string> args) =>
        string.Join(' ', new[] { file }.Concat(args));

    internal static string Tail(string s, int max = 2000)
    {
        s = s.Trim();
        return s.Length <= max ? s : "..." + s[^max..];
    }
}
