using System.Buffers;
using System.ComponentModel;
using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Colo.Vm.Internal;
using Microsoft.Extensions.Logging;

namespace Colo.Vm;

/// <summary>
/// A running QEMU started from a <see cref="VmSpec"/>, with its QMP connection, lifecycle control and device-state
/// capture/load without RAM (DESIGN.md mechanisms 2 and 3). Disposing kills QEMU if it still runs.
/// </summary>
public sealed class QemuProcess : IAsyncDisposable
{
    /// <summary>Number of stderr/stdout lines of QEMU kept for error messages.</summary>
    public const int StderrTailLines = 40;

    private const int ReceiveChunkBytes = 64 * 1024;
    /// <summary>Longest wait between two <c>query-migrate</c> polls when no MIGRATION event arrives: 5 ms.</summary>
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(5);

    private readonly Process _process;
    private readonly ILogger _logger;
    private readonly OutputTail _stderr;
    private readonly SemaphoreSlim _migrationLock = new(1, 1);
    private bool _capabilitiesSet;
    private int _socketCounter;
    private int _disposed;

    private QemuProcess(VmSpec spec, Process process, OutputTail stderr, Task<int> exited, ILogger logger)
    {
        Spec = spec;
        _process = process;
        _stderr = stderr;
        Exited = exited;
        _logger = logger;
        Pid = process.Id;
        Qmp = null!;
    }

    /// <summary>The spec QEMU was started from.</summary>
    public VmSpec Spec { get; }

    /// <summary>Process id of QEMU.</summary>
    public int Pid { get; }

    /// <summary>The QMP connection (in command mode).</summary>
    public QmpClient Qmp { get; private set; }

    /// <summary>Completes with QEMU's exit code when it exits (128+signal, e.g. 137, when killed by a signal).</summary>
    public Task<int> Exited { get; }

    /// <summary>True once QEMU has exited.</summary>
    public bool HasExited => Exited.IsCompleted;

    /// <summary>The last <see cref="StderrTailLines"/> lines QEMU wrote to stderr/stdout.</summary>
    public string StderrTail => _stderr.ToString();

    /// <summary>
    /// Starts QEMU with <see cref="QemuCommandLine.Build"/>(<paramref name="spec"/>) and connects QMP.
    /// A stale file at <see cref="VmSpec.QmpSocketPath"/> is deleted first. The <see cref="VmSpec.NetSocketPath"/>
    /// socket must already be listening (QEMU connects to it as a client during start-up).
    /// </summary>
    /// <param name="spec">What to start.</param>
    /// <param name="logger">Logger; QEMU's stderr lines are logged at Debug.</param>
    /// <param name="startTimeout">Limit for QMP to become ready (typically 100–300 ms under TCG).</param>
    /// <param name="cancellationToken">Cancels the start; QEMU is killed.</param>
    /// <exception cref="ArgumentException">The spec is invalid.</exception>
    /// <exception cref="QemuStartException">QEMU could not be executed, exited during start-up (message includes the
    /// tail of its stderr), or QMP did not become ready within <paramref name="startTimeout"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public static async Task<QemuProcess> StartAsync(VmSpec spec, ILogger logger, TimeSpan startTimeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(logger);
        IReadOnlyList<string> argv = QemuCommandLine.Build(spec);
        DeleteIfExists(spec.QmpSocketPath);

        ProcessStartInfo psi = new(spec.QemuBinary)
        {
            UseShellExecute = false,
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            RedirectStandardInput = true,
        };
        foreach (string arg in argv)
        {
            psi.ArgumentList.Add(arg);
        }

        OutputTail tail = new(StderrTailLines, 1000);
        Process process = new() { StartInfo = psi };
        string name = spec.Name;
        DataReceivedEventHandler onLine = (_, e) =>
        {
            if (e.Data is { } line)
            {
                tail.Add(line);
                Log.QemuStderr(logger, name, line);
            }
        };
        process.ErrorDataReceived += onLine;
        process.OutputDataReceived += onLine;

        try
        {
            if (!process.Start())
            {
                throw new QemuStartException($"Could not start '{spec.QemuBinary}'.", null, string.Empty);
            }
        }
        catch (Win32Exception e)
        {
            process.Dispose();
            throw new QemuStartException($"Could not execute '{spec.QemuBinary}': {e.Message}", null, string.Empty, e);
        }

        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        Log.QemuStarted(logger, name, process.Id, spec.QemuBinary, string.Join(' ', argv));
        Task<int> exited = WaitForExitAsync(process, name, logger);
        QemuProcess qemu = new(spec, process, tail, exited, logger);

        using CancellationTokenSource cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        Task<QmpClient> connect = QmpClient.ConnectAsync(spec.QmpSocketPath, startTimeout, logger, cts.Token);
        try
        {
            Task first = await Task.WhenAny(connect, exited).ConfigureAwait(false);
            if (first == exited && !connect.IsCompletedSuccessfully)
            {
                await cts.CancelAsync().ConfigureAwait(false);
                await connect.ContinueWith(static t => t.Exception, TaskScheduler.Default).ConfigureAwait(false);
                int code = await exited.ConfigureAwait(false);
                throw new QemuStartException($"QEMU '{name}' exited with code {code} during start-up.", code, tail.ToString());
            }

            qemu.Qmp = await connect.ConfigureAwait(false);
            return qemu;
        }
        catch (Exception e) when (e is not QemuStartException)
        {
            qemu.Kill();
            await exited.WaitAsync(TimeSpan.FromSeconds(5), CancellationToken.None).ConfigureAwait(false);
            await qemu.DisposeProcessAsync().ConfigureAwait(false);
            if (e is OperationCanceledException && cancellationToken.IsCancellationRequested)
            {
                throw;
            }

            throw new QemuStartException($"QMP of QEMU '{name}' (pid {qemu.Pid}) did not become ready: {e.Message}", exited.IsCompleted ? exited.Result : null, tail.ToString(), e);
        }
        catch (QemuStartException)
        {
            await qemu.DisposeProcessAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Pauses the guest (QMP <c>stop</c>); QEMU emits <c>STOP</c>. Idempotent.</summary>
    /// <exception cref="QmpErrorException">QEMU refused.</exception>
    /// <exception cref="QmpDisconnectedException">QEMU is gone.</exception>
    /// <exception cref="TimeoutException">No reply within 10 s.</exception>
    public Task StopAsync() => Qmp.ExecuteAsync("stop");

    /// <summary>Resumes the guest (QMP <c>cont</c>), also from <c>postmigrate</c> (after a capture) and <c>paused</c> (after a load).</summary>
    /// <exception cref="QmpErrorException">QEMU refused (e.g. still <c>inmigrate</c>).</exception>
    /// <exception cref="QmpDisconnectedException">QEMU is gone.</exception>
    /// <exception cref="TimeoutException">No reply within 10 s.</exception>
    public Task ContAsync() => Qmp.ExecuteAsync("cont");

    /// <summary>
    /// Returns the run state from QMP <c>query-status</c>: <c>running</c>, <c>paused</c>, <c>postmigrate</c>,
    /// <c>inmigrate</c>, <c>prelaunch</c>, <c>shutdown</c>, ... (QEMU QMP reference, RunState).
    /// </summary>
    /// <exception cref="QmpDisconnectedException">QEMU is gone.</exception>
    /// <exception cref="TimeoutException">No reply within 10 s.</exception>
    public async Task<string> QueryStatusAsync()
    {
        JsonElement r = await Qmp.ExecuteAsync("query-status").ConfigureAwait(false);
        return r.GetProperty("status"u8).GetString() ?? string.Empty;
    }

    /// <summary>Sends SIGKILL to QEMU's PID (no-op if it has exited). Does not wait; await <see cref="Exited"/>.</summary>
    public void Kill()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: false);
                Log.QemuKilled(_logger, Spec.Name, Pid);
            }
        }
        catch (InvalidOperationException)
        {
            // Already exited.
        }
        catch (Win32Exception)
        {
            // Raced with exit.
        }
    }

    /// <summary>
    /// Asks QEMU to exit (QMP <c>quit</c>); if it has not exited within <paramref name="timeout"/>, kills it.
    /// Returns once QEMU has exited. Never throws for a QEMU that is already gone.
    /// </summary>
    /// <param name="timeout">Grace period for a clean exit.</param>
    public async Task QuitAsync(TimeSpan timeout)
    {
        if (!HasExited)
        {
            try
            {
                await Qmp.ExecuteAsync("quit", null, timeout).ConfigureAwait(false);
            }
            catch (Exception e) when (e is QmpDisconnectedException or TimeoutException or QmpErrorException)
            {
                // QEMU may close QMP before replying to quit.
            }

            try
            {
                await Exited.WaitAsync(timeout).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                Kill();
            }
        }

        await Exited.ConfigureAwait(false);
    }

    /// <summary>
    /// Captures the device state (CPU, devices and small non-shared RAM blocks such as ROMs; not guest RAM, which
    /// lives in the shared file) by migrating to a unix socket this method listens on, with migration capability
    /// <c>x-ignore-shared</c>. The VM must already be stopped (<see cref="StopAsync"/>); afterwards it is in run state
    /// <c>postmigrate</c> and <see cref="ContAsync"/> resumes it. Repeatable any number of times on the same QEMU,
    /// but QEMU 7.2 refuses a second capture while the VM is still <c>postmigrate</c> ("Can't migrate the vm that was
    /// paused due to previous migration"), also after a failed capture: the VM must be resumed in between, so a
    /// failed checkpoint cannot be retried from the same stopped state. Also sets capability <c>events</c> so that
    /// completion is signalled by the <c>MIGRATION</c> event.
    /// </summary>
    /// <param name="output">Receives the raw migration stream (appended; pooled writers avoid allocation). On failure
    /// it may hold a partial stream.</param>
    /// <param name="timeout">Limit for the whole capture (typically 2–8 ms).</param>
    /// <param name="cancellationToken">Cancels the capture (the migration is cancelled best-effort).</param>
    /// <returns>Number of bytes written to <paramref name="output"/>.</returns>
    /// <exception cref="DeviceStateException">A step failed or the timeout elapsed; <see cref="DeviceStateException.Step"/> says which.</exception>
    /// <exception cref="QmpDisconnectedException">QEMU died.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public async Task<int> CaptureDeviceStateAsync(IBufferWriter<byte> output, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(output);
        long t0 = Stopwatch.GetTimestamp();
        await _migrationLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        using CancellationTokenSource cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(timeout);
        DeviceStateStep step = DeviceStateStep.SetCapabilities;
        string path = NextMigrationSocketPath();
        Socket? listener = null;
        Task finished = Task.CompletedTask;
        try
        {
            await EnsureCapabilitiesAsync(cts.Token).ConfigureAwait(false);

            step = DeviceStateStep.Socket;
            DeleteIfExists(path);
            listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            listener.Bind(new UnixDomainSocketEndPoint(path));
            listener.Listen(1);

            step = DeviceStateStep.Start;
            finished = WaitForMigrationEventAsync(cts.Token);
            await Qmp.ExecuteAsync("migrate", new MigrateArguments("unix:" + path), Remaining(timeout, t0), cts.Token).ConfigureAwait(false);

            step = DeviceStateStep.Transfer;
            int total = 0;
            using (Socket conn = await listener.AcceptAsync(cts.Token).ConfigureAwait(false))
            {
                listener.Dispose();
                listener = null;
                while (true)
                {
                    Memory<byte> m = output.GetMemory(ReceiveChunkBytes);
                    int n = await conn.ReceiveAsync(m, SocketFlags.None, cts.Token).ConfigureAwait(false);
                    if (n == 0)
                    {
                        break;
                    }

                    output.Advance(n);
                    total += n;
                }
            }

            step = DeviceStateStep.Completion;
            await WaitForMigrationCompletedAsync(finished, timeout, t0, cts.Token).ConfigureAwait(false);
            Log.DeviceStateCaptured(_logger, Spec.Name, total, Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
            return total;
        }
        catch (Exception e) when (e is not DeviceStateException && e is not QmpDisconnectedException
                                  && !(e is OperationCanceledException && cancellationToken.IsCancellationRequested))
        {
            DeviceStateException ex = await FailAsync("capture", step, timeout, e, cancel: true).ConfigureAwait(false);
            throw ex;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            await CancelMigrationAsync().ConfigureAwait(false);
            throw;
        }
        finally
        {
            await cts.CancelAsync().ConfigureAwait(false);
            await finished.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            listener?.Dispose();
            DeleteIfExists(path);
            _migrationLock.Release();
        }
    }

    /// <summary>
    /// Loads device state captured by <see cref="CaptureDeviceStateAsync"/> into this QEMU, which must have been
    /// started with <see cref="VmSpec.IncomingDefer"/> and the identical device configuration, and whose RAM file
    /// must already hold the matching guest memory. Sets <c>x-ignore-shared</c>, issues <c>migrate-incoming</c> on a
    /// fresh unix socket, streams the state into it, and waits for status <c>completed</c>. The VM is then
    /// <c>paused</c>; <see cref="ContAsync"/> runs it. QEMU accepts <c>migrate-incoming</c> only once per process.
    /// </summary>
    /// <param name="state">The raw stream from a capture.</param>
    /// <param name="timeout">Limit for the whole load (typically a few ms).</param>
    /// <param name="cancellationToken">Cancels the load.</param>
    /// <exception cref="InvalidOperationException">The spec does not have <see cref="VmSpec.IncomingDefer"/>.</exception>
    /// <exception cref="DeviceStateException">A step failed (e.g. QEMU rejected the stream: status <c>failed</c>) or
    /// the timeout elapsed; QEMU usually exits after a failed incoming migration.</exception>
    /// <exception cref="QmpDisconnectedException">QEMU died (it exits when the incoming stream is invalid).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public async Task LoadDeviceStateAsync(ReadOnlyMemory<byte> state, TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (!Spec.IncomingDefer)
        {
            throw new InvalidOperationException($"QEMU '{Spec.Name}' was not started with IncomingDefer; it cannot load device state.");
        }

        long t0 = Stopwatch.GetTimestamp();
        await _migrationLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        using CancellationTokenSource cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(timeout);
        DeviceStateStep step = DeviceStateStep.SetCapabilities;
        string path = NextMigrationSocketPath();
        Task finished = Task.CompletedTask;
        try
        {
            await EnsureCapabilitiesAsync(cts.Token).ConfigureAwait(false);

            step = DeviceStateStep.Start;
            DeleteIfExists(path);
            finished = WaitForMigrationEventAsync(cts.Token);
            await Qmp.ExecuteAsync("migrate-incoming", new MigrateArguments("unix:" + path), Remaining(timeout, t0), cts.Token).ConfigureAwait(false);

            step = DeviceStateStep.Socket;
            using (Socket conn = new(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
            {
                await conn.ConnectAsync(new UnixDomainSocketEndPoint(path), cts.Token).ConfigureAwait(false);
                step = DeviceStateStep.Transfer;
                ReadOnlyMemory<byte> rest = state;
                while (!rest.IsEmpty)
                {
                    int n = await conn.SendAsync(rest, SocketFlags.None, cts.Token).ConfigureAwait(false);
                    rest = rest[n..];
                }

                conn.Shutdown(SocketShutdown.Send);
            }

            step = DeviceStateStep.Completion;
            await WaitForMigrationCompletedAsync(finished, timeout, t0, cts.Token).ConfigureAwait(false);
            Log.DeviceStateLoaded(_logger, Spec.Name, state.Length, Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
        }
        catch (Exception e) when (e is not DeviceStateException && e is not QmpDisconnectedException
                                  && !(e is OperationCanceledException && cancellationToken.IsCancellationRequested))
        {
            DeviceStateException ex = await FailAsync("load", step, timeout, e, cancel: false).ConfigureAwait(false);
            throw ex;
        }
        finally
        {
            await cts.CancelAsync().ConfigureAwait(false);
            await finished.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            DeleteIfExists(path);
            _migrationLock.Release();
        }
    }

    /// <summary>Kills QEMU if it still runs, waits up to 5 s for it to exit, closes QMP and deletes its QMP socket file. Idempotent.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        Kill();
        try
        {
            await Exited.WaitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
        }

        await DisposeProcessAsync().ConfigureAwait(false);
    }

    private async ValueTask DisposeProcessAsync()
    {
        if (Qmp is not null)
        {
            await Qmp.DisposeAsync().ConfigureAwait(false);
        }

        _process.Dispose();
        DeleteIfExists(Spec.QmpSocketPath);
    }

    private static async Task<int> WaitForExitAsync(Process process, string name, ILogger logger)
    {
        int pid = process.Id;
        await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
        int code = process.ExitCode;
        Log.QemuExited(logger, name, pid, code);
        return code;
    }

    private async Task EnsureCapabilitiesAsync(CancellationToken cancellationToken)
    {
        if (_capabilitiesSet)
        {
            return;
        }

        await Qmp.ExecuteAsync("migrate-set-capabilities", s_capabilities, null, cancellationToken).ConfigureAwait(false);
        _capabilitiesSet = true;
    }

    private Task WaitForMigrationEventAsync(CancellationToken cancellationToken) =>
        Qmp.WaitForEventAsync("MIGRATION", static e => e.GetDataString("status") is "completed" or "failed" or "cancelled",
            Timeout.InfiniteTimeSpan, cancellationToken);

    /// <summary>
    /// Polls <c>query-migrate</c> until a terminal status; between polls waits for the MIGRATION event (capability
    /// <c>events</c>) or at most <see cref="PollInterval"/>, so completion is seen within microseconds.
    /// </summary>
    private async Task WaitForMigrationCompletedAsync(Task finished, TimeSpan timeout, long t0, CancellationToken cancellationToken)
    {
        while (true)
        {
            JsonElement r = await Qmp.ExecuteAsync("query-migrate", null, Remaining(timeout, t0), cancellationToken).ConfigureAwait(false);
            string? status = r.TryGetProperty("status"u8, out JsonElement s) ? s.GetString() : null;
            switch (status)
            {
                case "completed":
                    return;
                case "failed":
                case "cancelled":
                    string desc = r.TryGetProperty("error-desc"u8, out JsonElement d) ? d.GetString() ?? "" : "no error-desc";
                    throw new DeviceStateException(DeviceStateStep.Completion, $"migration of '{Spec.Name}' ended with status '{status}': {desc}");
            }

            if (finished.IsCompleted)
            {
                await Task.Delay(PollInterval, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                await Task.WhenAny(finished, Task.Delay(PollInterval, cancellationToken)).ConfigureAwait(false);
                cancellationToken.ThrowIfCancellationRequested();
            }
        }
    }

    private async Task<DeviceStateException> FailAsync(string operation, DeviceStateStep step, TimeSpan timeout, Exception e, bool cancel)
    {
        string detail = e.Message;
        if (e is OperationCanceledException)
        {
            detail = $"timed out after {timeout.TotalMilliseconds:F0} ms";
        }

        // Ask QEMU why, when it still answers.
        try
        {
            JsonElement r = await Qmp.ExecuteAsync("query-migrate", null, TimeSpan.FromSeconds(1)).ConfigureAwait(false);
            if (r.TryGetProperty("status"u8, out JsonElement s))
            {
                detail += $" (migration status '{s.GetString()}'";
                if (r.TryGetProperty("error-desc"u8, out JsonElement d))
                {
                    detail += $": {d.GetString()}";
                }

                detail += ")";
            }
        }
        catch (Exception qe) when (qe is QmpDisconnectedException or TimeoutException or QmpErrorException)
        {
        }

        if (cancel)
        {
            await CancelMigrationAsync().ConfigureAwait(false);
        }

        DeviceStateException ex = new(step, $"device state {operation} of '{Spec.Name}' failed: {detail}", e);
        Log.DeviceStateFailed(_logger, ex, Spec.Name, operation, step.ToString());
        return ex;
    }

    private async Task CancelMigrationAsync()
    {
        try
        {
            await Qmp.ExecuteAsync("migrate_cancel", null, TimeSpan.FromSeconds(1)).ConfigureAwait(false);
        }
        catch (Exception e) when (e is QmpDisconnectedException or TimeoutException or QmpErrorException)
        {
        }
    }

    private string NextMigrationSocketPath()
    {
        int n = Interlocked.Increment(ref _socketCounter);
        string dir = Path.GetDirectoryName(Spec.QmpSocketPath) ?? "/tmp";
        string path = Path.Combine(dir, $"{Spec.Name}.{Pid}.mig{n}.sock");
        if (Encoding.UTF8.GetByteCount(path) > VmSpec.MaxUnixSocketPathBytes)
        {
            path = Path.Combine(Path.GetTempPath(), $"colo-{Pid}.mig{n}.sock");
        }

        return path;
    }

    private static TimeSpan Remaining(TimeSpan timeout, long t0)
    {
        if (timeout == Timeout.InfiniteTimeSpan)
        {
            return Timeout.InfiniteTimeSpan;
        }

        TimeSpan left = timeout - Stopwatch.GetElapsedTime(t0);
        return left > TimeSpan.FromMilliseconds(1) ? left : TimeSpan.FromMilliseconds(1);
    }

    private static void DeleteIfExists(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    private static readonly JsonElement s_capabilities = JsonDocument.Parse(
        """{"capabilities":[{"capability":"x-ignore-shared","state":true},{"capability":"events","state":true}]}""").RootElement.Clone();

    private sealed record MigrateArguments(string uri);
}
