using System.Diagnostics;
using System.Text;

namespace Colo.Nbd;

/// <summary>
/// Runs Debian's <c>qemu-img</c> (package qemu-utils) for image import and export: qcow2 (or any format QEMU reads)
/// to a raw image we can serve, and back. Each run has a timeout after which the process is killed by its PID.
/// </summary>
public static class QemuImg
{
    /// <summary>Default timeout of one qemu-img run: 10 minutes (a full copy of a few GiB).</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromMinutes(10);

    /// <summary>The NBD URI of an export on a unix socket, as QEMU 7.2 parses it: <c>nbd+unix:///NAME?socket=PATH</c>.</summary>
    public static string NbdUnixUri(string socketPath, string exportName) =>
        $"nbd+unix:///{Uri.EscapeDataString(exportName)}?socket={socketPath}";

    /// <summary>Converts an image: <c>qemu-img convert -f SRCFMT -O DSTFMT SRC DST</c>.</summary>
    /// <param name="source">Source file or NBD URI.</param>
    /// <param name="sourceFormat">Source format (<c>raw</c>, <c>qcow2</c>, ...); for an NBD URI the format of the export, <c>raw</c>.</param>
    /// <param name="destination">Destination file or NBD URI (then the export must be big enough; <c>-n</c> is added so qemu-img does not try to create it).</param>
    /// <param name="destinationFormat">Destination format.</param>
    /// <param name="timeout">Kill qemu-img after this long; null for <see cref="DefaultTimeout"/>.</param>
    /// <param name="ct">Cancels (and kills) the run.</param>
    /// <exception cref="QemuImgException">qemu-img failed, timed out or is not installed.</exception>
    public static Task ConvertAsync(string source, string sourceFormat, string destination, string destinationFormat, TimeSpan? timeout = null, CancellationToken ct = default)
    {
        var args = new List<string> { "convert", "-q", "-f", sourceFormat, "-O", destinationFormat };
        if (destination.StartsWith("nbd", StringComparison.Ordinal))
        {
            args.Add("-n");
        }

        args.Add(source);
        args.Add(destination);
        return RunAsync(args, timeout, ct);
    }

    /// <summary>Imports any image QEMU reads into a raw file (created or replaced).</summary>
    public static Task ImportToRawAsync(string source, string sourceFormat, string rawPath, TimeSpan? timeout = null, CancellationToken ct = default) =>
        ConvertAsync(source, sourceFormat, rawPath, "raw", timeout, ct);

    /// <summary>Exports a raw file to another format (for example qcow2).</summary>
    public static Task ExportFromRawAsync(string rawPath, string destination, string destinationFormat, TimeSpan? timeout = null, CancellationToken ct = default) =>
        ConvertAsync(rawPath, "raw", destination, destinationFormat, timeout, ct);

    /// <summary>Runs qemu-img with <paramref name="args"/> and returns its standard output.</summary>
    /// <exception cref="QemuImgException">Non-zero exit, timeout, or qemu-img missing.</exception>
    public static async Task<string> RunAsync(IReadOnlyList<string> args, TimeSpan? timeout = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(args);
        TimeSpan limit = timeout ?? DefaultTimeout;
        var psi = new ProcessStartInfo("qemu-img")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        string command = "qemu-img " + string.Join(' ', args);
        Process process;
        try
        {
            process = Process.Start(psi) ?? throw new QemuImgException(command, "could not be started");
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new QemuImgException(command, "could not be started (apt-get install -y qemu-utils): " + ex.Message);
        }

        using (process)
        {
            Task<string> stdout = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
            Task<string> stderr = process.StandardError.ReadToEndAsync(CancellationToken.None);
            using var wait = CancellationTokenSource.CreateLinkedTokenSource(ct);
            wait.CancelAfter(limit);
            try
            {
                await process.WaitForExitAsync(wait.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                try
                {
                    process.Kill(entireProcessTree: true); // by PID
                }
                catch (InvalidOperationException)
                {
                    // Exited meanwhile.
                }

                await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
                ct.ThrowIfCancellationRequested();
                throw new QemuImgException(command, $"timed out after {limit.TotalSeconds:F0} s and was killed");
            }

            string output = await stdout.ConfigureAwait(false);
            string errors = await stderr.ConfigureAwait(false);
            if (process.ExitCode != 0)
            {
                var message = new StringBuilder($"exited with code {process.ExitCode}");
                if (errors.Length > 0)
                {
                    message.Append(": ").Append(errors.Trim());
                }

                throw new QemuImgException(command, message.ToString());
            }

            return output;
        }
    }
}

/// <summary>A qemu-img run failed.</summary>
public sealed class QemuImgException(string command, string problem) : Exception($"'{command}' {problem}")
{
    /// <summary>The command line that failed.</summary>
    public string Command { get; } = command;
}
