using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using Colo.Checkpoint;
using Colo.Failover;
using Colo.Link;
using Colo.Proxy;
using Colo.Vm;
using Microsoft.Extensions.Logging;

namespace Colo.Node.Primary;

/// <summary>
/// The primary daemon: runs the PVM, its proxy and the checkpoint controller. Boots the guest,
/// waits for it to be ready, connects the replication link, performs the initial full sync and
/// then checkpoints on demand (compare mismatch, compare timeout, queue full, maximum epoch
/// length). When the secondary is lost it releases everything and runs unprotected; when its PVM
/// dies it says goodbye on the link and exits with code 2.
/// </summary>
public sealed class PrimaryNode
{
    private readonly NodeConfig _cfg;
    private readonly ILoggerFactory _loggers;
    private readonly ILogger _log;
    private readonly NodeStatus _status = new() { Role = "primary" };
    private readonly StatusReporter _reporter;
    private readonly SemaphoreSlim _trigger = new(0);
    private readonly object _triggerLock = new();
    private CheckpointReason? _pendingReason;
    private bool _operatorPending; // under _triggerLock: an operator request survives ClearTrigger (it asked for a new checkpoint)
    private LinkConnection? _link;
    private PrimaryProxy? _proxy;
    private HeartbeatMonitor? _heartbeat;
    private TaskCompletionSource<ulong>? _loaded;
    private volatile bool _protected;
    private readonly TaskCompletionSource<string> _fenced = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private QemuProcess? _pvm;
    private PrimaryDisk? _disk;
    private volatile bool _stopping;
    private int _secondaryLost;

    /// <summary>Creates the daemon; nothing starts until <see cref="RunAsync"/>.</summary>
    public PrimaryNode(NodeConfig config, ILoggerFactory loggers)
    {
        _cfg = config;
        _loggers = loggers;
        _log = loggers.CreateLogger("primary");
        _reporter = new StatusReporter(_status, config.RunDirectory, () => _proxy?.Counters(), _log) { BeforeWrite = RefreshDiskStatus };
    }

    /// <summary>
    /// Runs until cancelled or the PVM dies. When the secondary does not answer within <c>link_wait_ms</c> the PVM
    /// serves on unprotected (state <c>unprotected</c>, <c>peer_lost_reason</c> "secondary never connected: ...")
    /// instead of dying with the daemon; no later protection is attempted (a secondary starting afterwards is not
    /// accepted: restart both daemons to protect the VM).
    /// </summary>
    /// <returns>0 after cancellation, 2 when the PVM died, 4 when fenced (the secondary took over), 1 on errors.</returns>
    public async Task<int> RunAsync(CancellationToken ct)
    {
        Directory.CreateDirectory(_cfg.RunDirectory);
        string ramPath = Path.Combine(_cfg.RamDirectory, $"{_cfg.RamFilePrefix}-{_cfg.VmName}-pvm.ram");
        string consolePath = Path.Combine(_cfg.RunDirectory, "pvm-console.log");
        WriteStatus();
        try
        {
            var tap = TapDevice.Open(_cfg.TapName); // fails early, before any VM runs, when the TAP is missing
            using var ram = GuestRam.Open(ramPath, _cfg.MemoryBytes);
            using var netListener = new NetdevStreamListener(Path.Combine(_cfg.RunDirectory, "pvm-net.sock"));
            // The disk is served before QEMU starts: its NBD client connects at start-up.
            await using var disk = _disk = _cfg.DiskImage is null ? null
                : PrimaryDisk.Start(_cfg.DiskImage, VmSpecs.DiskSocket(_cfg, "pvm")!, (long)_cfg.DiskForwardQueueMib << 20, _loggers);
            if (disk != null)
                _status.Disk = new DiskStatus { SizeBytes = disk.Size };
            var spec = VmSpecs.For(_cfg, "pvm", ramPath, incoming: false, VmSpecs.DiskSocket(_cfg, "pvm"));
            await using var pvm = await QemuProcess.StartAsync(spec, _loggers.CreateLogger("pvm"), TimeSpan.FromSeconds(30), ct);
            _status.VmPid = pvm.Pid;
            _status.State = "booting";
            WriteStatus();
            _log.LogInformation("PVM started, pid {Pid}", pvm.Pid);
            _pvm = pvm;
            var netConn = await netListener.AcceptAsync(TimeSpan.FromSeconds(15), ct);
            var compare = new CompareOptions { CompareTimeout = TimeSpan.FromMilliseconds(_cfg.CompareTimeoutMs) };
            using var proxy = _proxy = new PrimaryProxy(compare, tap, netConn, RequestCheckpoint, _loggers.CreateLogger("proxy"));
            proxy.Start();

            await ConsoleWatcher.WaitForMarkerAsync(consolePath, _cfg.ReadyMarker, TimeSpan.FromMilliseconds(_cfg.GuestReadyTimeoutMs), pvm.Exited, ct);
            _log.LogInformation("guest ready; connecting the replication link to {EndPoint}", _cfg.LinkEndPoint);
            _status.State = "syncing";
            WriteStatus();

            LinkConnection connected;
            try
            {
                // Refused or failed attempts are retried until link_wait_ms has passed, then TimeoutException.
                connected = await LinkConnection.ConnectAsync(_cfg.LinkEndPoint, TimeSpan.FromMilliseconds(_cfg.LinkWaitMs), _loggers.CreateLogger("link"), ct);
            }
            catch (TimeoutException e)
            {
                // The standby host is down: the VM must not die with this daemon. It serves on unprotected, for good.
                SecondaryLost("secondary never connected: " + e.Message);
                return await ServeUntilEndAsync(pvm, proxy, ct);
            }
            await using var link = _link = connected;
            await link.SendAsync(MessageType.Hello, 0, LinkHello.Encode(new LinkHello("primary", _cfg.VmName, _cfg.MemoryBytes, VmSpecs.ConfigHash(_cfg))), ct);
            // Not tied to ct: on a stop the goodbye must still go out before the link closes.
            var receive = Task.Run(() => link.RunReceiveLoopAsync(OnMessageAsync, CancellationToken.None));
            await using var heartbeat = _heartbeat = new HeartbeatMonitor(
                TimeSpan.FromMilliseconds(_cfg.HeartbeatIntervalMs), TimeSpan.FromMilliseconds(_cfg.SyncHeartbeatTimeoutMs),
                c => link.SendAsync(MessageType.Heartbeat, proxy.Epoch, ReadOnlyMemory<byte>.Empty, c),
                reason => _ = PeerSilentAsync("heartbeat: " + reason), TimeProvider.System, _loggers.CreateLogger("heartbeat"));
            heartbeat.Start();
            _ = link.Closed.ContinueWith(_ => PeerSilentAsync("link closed: " + link.CloseReason), TaskScheduler.Default);

            var checkpointer = new CheckpointSender(pvm, ram, link, disk, _cfg, _log);
            var sw = Stopwatch.StartNew();
            bool diskSynced = true;
            if (disk != null)
            {
                try
                {
                    await disk.InitialSyncAsync(link, _status.Disk!, ct);
                }
                catch (Exception e) when (e is LinkClosedException or IOException or TimeoutException or ObjectDisposedException)
                {
                    // The secondary went away (or refused the disk) during the copy: the PVM serves on, unprotected.
                    diskSynced = false;
                    _log.LogWarning("disk sync failed: {Error}", e.Message);
                    await PeerSilentAsync("disk sync failed: " + e.Message);
                }
            }
            if (diskSynced && await RunCheckpointAsync(checkpointer, full: true, reason: null, ct) && Volatile.Read(ref _secondaryLost) == 0 && !_fenced.Task.IsCompleted)
            {
                _status.InitialSyncMs = sw.Elapsed.TotalMilliseconds;
                heartbeat.Timeout = TimeSpan.FromMilliseconds(_cfg.HeartbeatTimeoutMs);
                _protected = true;
                _status.State = "protected";
                WriteStatus();
                _log.LogInformation("protected: initial sync took {Ms:F0} ms", _status.InitialSyncMs);
            }

            var scheduler = Task.Run(() => ScheduleAsync(checkpointer, ct), ct);
            return await ServeUntilEndAsync(pvm, proxy, ct);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            await SayGoodbyeAsync(FarewellKind.Survive, "primary stopping");
            _status.State = "stopped";
            WriteStatus();
            return 0;
        }
        catch (Exception e)
        {
            if (e is IOException or TimeoutException or InvalidOperationException or QemuStartException or LinkClosedException)
                _log.LogError("primary failed: {Error}", e.Message);
            else
                _log.LogError(e, "primary failed");
            _status.State = "error";
            _status.Error = e.Message;
            WriteStatus();
            await SayGoodbyeAsync(FarewellKind.Survive, "primary error: " + e.Message);
            return 1;
        }
        finally
        {
            TryDelete(ramPath);
        }
    }

    /// <summary>
    /// Serves, protected or not, keeping <c>status.json</c> fresh, until the PVM dies, the secondary fences this primary
    /// or <paramref name="ct"/> is cancelled; then says goodbye on the link (if any) and records the final state.
    /// </summary>
    /// <returns>The exit code of <see cref="RunAsync"/>: 0 stopped, 2 PVM died, 4 fenced.</returns>
    private async Task<int> ServeUntilEndAsync(QemuProcess pvm, PrimaryProxy proxy, CancellationToken ct)
    {
        _ = Task.Run(() => _reporter.RunAsync(ct), ct);
        await Task.WhenAny(pvm.Exited, proxy.PvmClosed, _fenced.Task, Task.Delay(Timeout.Infinite, ct));
        _stopping = true; // from here on a lost secondary changes nothing (no release to the TAP, no status change)
        if (_fenced.Task.IsCompleted)
        {
            pvm.Kill();
            _status.State = "fenced";
            _status.Error = "fenced: " + _fenced.Task.Result;
            WriteStatus();
            return 4;
        }
        if (ct.IsCancellationRequested)
        {
            // An operator stopping the primary ends the PVM: the secondary (if there is one) takes over.
            await SayGoodbyeAsync(FarewellKind.Survive, "primary stopping");
            _status.State = "stopped";
            WriteStatus();
            return 0;
        }
        _log.LogError("PVM died (QEMU pid {Pid} exited)", pvm.Pid);
        _status.State = "pvm-dead";
        _status.Error = "PVM exited";
        WriteStatus();
        await SayGoodbyeAsync(FarewellKind.Survive, "PVM died");
        return 2;
    }

    private Task SayGoodbyeAsync(FarewellKind kind, string reason) =>
        Farewell.SendAndCloseAsync(_link, kind, reason, _proxy?.Epoch ?? 0, _log);

    /// <summary>
    /// An operator asks for a checkpoint now (<c>colo checkpoint</c>, SIGUSR1 to this daemon). Ignored unless protected;
    /// counted as <c>operator</c> in <see cref="NodeStatus.CheckpointsByReason"/>.
    /// </summary>
    /// <returns>False when the VM is not protected (nothing to checkpoint into).</returns>
    public bool RequestOperatorCheckpoint()
    {
        if (!_protected)
            return false;
        _log.LogInformation("checkpoint requested by an operator");
        lock (_triggerLock)
            _operatorPending = true;
        _trigger.Release();
        return true;
    }

    private void RequestCheckpoint(CheckpointReason reason)
    {
        lock (_triggerLock)
        {
            if (_pendingReason != null)
                return;
            _pendingReason = reason;
        }
        _trigger.Release();
    }

    private async Task ScheduleAsync(CheckpointSender checkpointer, CancellationToken ct)
    {
        var maxEpoch = _cfg.MaxEpochMs > 0 ? TimeSpan.FromMilliseconds(_cfg.MaxEpochMs) : Timeout.InfiniteTimeSpan;
        while (!ct.IsCancellationRequested && _protected)
        {
            bool signalled = await _trigger.WaitAsync(maxEpoch, ct);
            CheckpointReason reason;
            lock (_triggerLock)
            {
                if (_operatorPending)
                {
                    _operatorPending = false;
                    reason = CheckpointReason.Operator;
                }
                else
                    reason = signalled && _pendingReason is { } r ? r : CheckpointReason.Periodic;
            }
            if (!_protected)
                break;
            await RunCheckpointAsync(checkpointer, full: false, reason, ct);
        }
    }

    /// <summary>Forgets pending checkpoint requests: the checkpoint being committed covers everything held so far.</summary>
    private void ClearTrigger()
    {
        lock (_triggerLock)
        {
            _pendingReason = null;
            while (_trigger.CurrentCount > 0)
                _trigger.Wait(0);
            if (_operatorPending)
                _trigger.Release(); // asked during this checkpoint: it gets one of its own
        }
    }

    private async Task<bool> RunCheckpointAsync(CheckpointSender checkpointer, bool full, CheckpointReason? reason, CancellationToken ct)
    {
        var link = _link!;
        var proxy = _proxy!;
        ulong next = proxy.Epoch + 1;
        var loaded = new TaskCompletionSource<ulong>(TaskCreationOptions.RunContinuationsAsynchronously);
        Volatile.Write(ref _loaded, loaded);
        proxy.MirrorTo(link);
        string? cause = reason is CheckpointReason.Mismatch or CheckpointReason.Timeout ? proxy.LastCause : null;
        var result = await checkpointer.RunAsync(next, full, loaded.Task, proxy, ClearTrigger, ct);
        Volatile.Write(ref _loaded, null);
        if (result.Error != null)
        {
            // Through the grace period: the failure may be the secondary having taken over (its Fence is on the link).
            await PeerSilentAsync("checkpoint failed: " + result.Error);
            return false;
        }
        if (!full)
        {
            _status.Checkpoints++;
            string key = ReasonName(reason ?? CheckpointReason.Periodic);
            _status.CheckpointsByReason[key] = _status.CheckpointsByReason.GetValueOrDefault(key) + 1;
            if (_status.PauseMs.Count >= 10000)
                _status.PauseMs.RemoveAt(0);
            _status.PauseMs.Add(Math.Round(result.PauseMs, 2));
        }
        _status.Epoch = next;
        _status.PagesShipped += result.Pages;
        WriteStatus();
        _log.LogInformation("checkpoint {Epoch} ({Reason}): {Pages} pages, {State} KB device state, pause {Pause:F1} ms{Cause}",
            next, full ? "initial sync" : ReasonName(reason ?? CheckpointReason.Periodic), result.Pages, result.DeviceStateBytes / 1024, result.PauseMs,
            cause is null ? "" : "; " + cause);
        return true;
    }

    internal static string ReasonName(CheckpointReason reason) => reason switch
    {
        CheckpointReason.Mismatch => "mismatch",
        CheckpointReason.Timeout => "timeout",
        CheckpointReason.QueueFull => "queue_full",
        CheckpointReason.Operator => "operator",
        _ => "periodic",
    };

    private ValueTask OnMessageAsync(MessageType type, ulong epoch, ReadOnlySequence<byte> payload)
    {
        _heartbeat?.HeartbeatReceived();
        switch (type)
        {
            case MessageType.Heartbeat:
                break;
            case MessageType.Hello:
                var hello = LinkHello.Decode(payload);
                if (hello.MemoryBytes != _cfg.MemoryBytes || hello.VmName != _cfg.VmName)
                    _link?.Close($"secondary describes another VM ({hello.VmName}, {hello.MemoryBytes} bytes)");
                break;
            case MessageType.SvmFrame:
                var proxy = _proxy;
                if (proxy != null && epoch == proxy.Epoch)
                {
                    if (payload.IsSingleSegment)
                    {
                        proxy.OnSvmFrame(payload.FirstSpan);
                    }
                    else
                    {
                        byte[] tmp = ArrayPool<byte>.Shared.Rent((int)payload.Length);
                        payload.CopyTo(tmp);
                        proxy.OnSvmFrame(tmp.AsSpan(0, (int)payload.Length));
                        ArrayPool<byte>.Shared.Return(tmp);
                    }
                }
                break;
            case MessageType.CheckpointLoaded:
                Volatile.Read(ref _loaded)?.TrySetResult(epoch);
                break;
            case MessageType.Goodbye:
                var (kind, why) = Farewell.Decode(payload);
                if (kind == FarewellKind.Fence)
                    Fence("goodbye from the secondary: " + why);
                else
                    SecondaryLost("secondary said goodbye: " + why);
                break;
            default:
                _link?.Close($"unexpected message {type} from the secondary");
                break;
        }
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// The secondary went silent (heartbeat timeout or link closed). Waits a short grace period first: after a stall
    /// of this host, a <c>Goodbye(Fence)</c> from a secondary that took over may still be unread on the link, and
    /// then this primary must stop instead of running on (no split brain after a transient stall).
    /// </summary>
    private async Task PeerSilentAsync(string reason)
    {
        await Task.Delay(Farewell.PeerLostGrace);
        if (!_fenced.Task.IsCompleted)
            SecondaryLost(reason);
    }

    private void SecondaryLost(string reason)
    {
        if (_stopping || _fenced.Task.IsCompleted || Interlocked.Exchange(ref _secondaryLost, 1) != 0)
            return;
        _log.LogWarning("secondary lost ({Reason}): releasing held output and running unprotected", reason);
        _protected = false;
        _disk?.StopReplication();
        _heartbeat?.PeerLost(reason);
        // Tell the secondary (if it is only stalled) to stop its SVM before anything is released.
        var link = _link;
        if (link != null && !link.IsClosed)
        {
            try
            {
                link.SendAsync(MessageType.Goodbye, 0, Farewell.Encode(FarewellKind.Fence, "primary continues unprotected: " + reason))
                    .AsTask().Wait(TimeSpan.FromMilliseconds(500));
            }
            catch (Exception e)
            {
                _log.LogDebug("fence goodbye not sent: {Error}", e.Message);
            }
        }
        link?.Close(reason);
        _proxy?.Unprotect();
        Volatile.Read(ref _loaded)?.TrySetException(new IOException("secondary lost: " + reason));
        _trigger.Release();
        _status.State = "unprotected";
        _status.PeerLostReason = reason;
        _status.PeerLostAtUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        WriteStatus();
    }

    /// <summary>The secondary took over: stop the PVM at once; nothing more leaves this host.</summary>
    private void Fence(string reason)
    {
        if (!_fenced.TrySetResult(reason))
            return;
        _log.LogError("fenced ({Reason}): stopping the PVM", reason);
        _protected = false;
        try
        {
            _pvm?.Kill();
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception)
        {
        }
        _proxy?.Dispose();
        _status.PeerLostReason = reason;
        _status.PeerLostAtUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        Volatile.Read(ref _loaded)?.TrySetException(new IOException("fenced: " + reason));
        _trigger.Release();
    }

    private void WriteStatus() => _reporter.Write();

    private void RefreshDiskStatus()
    {
        if (_status.Disk is { } d)
            _disk?.Report(d);
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
    }
}
