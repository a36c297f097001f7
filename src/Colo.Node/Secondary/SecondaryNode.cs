using System.Buffers;
using System.Diagnostics;
using System.Net;
using System.Net.NetworkInformation;
using Colo.Checkpoint;
using Colo.Failover;
using Colo.Link;
using Colo.Proxy;
using Microsoft.Extensions.Logging;

namespace Colo.Node.Secondary;

/// <summary>
/// The secondary daemon: accepts the primary on the replication link, keeps the memory cache,
/// runs the SVM with a standby QEMU waiting in <c>-incoming defer</c>, loads each checkpoint
/// (union restore of RAM, device state into the standby, <c>cont</c>, "loaded" back), and fails
/// over when the primary is lost: a partial checkpoint is discarded, the SVM keeps its current
/// state and takes the client-facing TAP with the guest's MAC/IP.
/// </summary>
public sealed class SecondaryNode
{
    private readonly NodeConfig _cfg;
    private readonly ILoggerFactory _loggers;
    private readonly ILogger _log;
    private readonly NodeStatus _status = new() { Role = "secondary" };
    private readonly StatusReporter _reporter;
    private readonly string _ramPath;
    private readonly ArrayBufferWriter<byte> _deviceState = new(1 << 20);
    private readonly SemaphoreSlim _commitLock = new(1, 1);
    private readonly TaskCompletionSource<int> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private SecondaryProxy? _proxy;
    private GuestRam? _ram;
    private MemoryCache? _cache;
    private LinkConnection? _link;
    private HeartbeatMonitor? _heartbeat;
    private ReplicaDisk? _disk;
    private SvmInstance? _active;
    private Task<SvmInstance>? _standby;
    private int _generation;
    private ulong _epoch;
    private ulong _receiving;
    private Task _commit = Task.CompletedTask;
    // 0 = undecided, 1 = taking over (primary lost), 2 = fenced (the primary carries on). Set once, atomically.
    private int _decision;
    private const int TakingOver = 1;
    private const int Fenced = 2;
    private CancellationToken _ct;

    /// <summary>Creates the daemon; nothing starts until <see cref="RunAsync"/>.</summary>
    public SecondaryNode(NodeConfig config, ILoggerFactory loggers)
    {
        _cfg = config;
        _loggers = loggers;
        _log = loggers.CreateLogger("secondary");
        _reporter = new StatusReporter(_status, config.RunDirectory, () => _proxy?.Counters(), _log) { BeforeWrite = RefreshDiskStatus };
        _ramPath = Path.Combine(config.RamDirectory, $"{config.RamFilePrefix}-{config.VmName}-svm.ram");
    }

    /// <summary>Runs until cancelled, or until the SVM dies after failover.</summary>
    /// <returns>0 after cancellation; 3 when the primary was lost before any checkpoint (nothing to fail over to); 1 on errors.</returns>
    public async Task<int> RunAsync(CancellationToken ct)
    {
        _ct = ct;
        Directory.CreateDirectory(_cfg.RunDirectory);
        WriteStatus();
        try
        {
            if (!Directory.Exists($"/sys/class/net/{_cfg.TapName}"))
                throw new IOException($"TAP device {_cfg.TapName} does not exist on this host; failover would fail (create it: ip tuntap add dev {_cfg.TapName} mode tap, and bridge it to the client network)");
            using var ram = _ram = GuestRam.Open(_ramPath, _cfg.MemoryBytes);
            using var cache = _cache = new MemoryCache(_cfg.MemoryBytes);
            using var proxy = _proxy = new SecondaryProxy(_loggers.CreateLogger("proxy"));
            await using var disk = _disk = _cfg.DiskImage is null ? null : new ReplicaDisk(_cfg, VmSpecs.DiskSocket(_cfg, "svm")!, _loggers);
            // With a disk the standby starts when the disk sync begins: its NBD client needs the export (and its size) at start-up.
            if (disk == null)
                _standby = StartStandby();
            else
                _status.Disk = new DiskStatus();
            _status.State = "waiting";
            WriteStatus();
            using var listener = new LinkListener(_cfg.LinkEndPoint, _loggers.CreateLogger("link"));
            _log.LogInformation("waiting for the primary on {EndPoint}", _cfg.LinkEndPoint);
            await using var link = _link = await listener.AcceptAsync(TimeSpan.FromMilliseconds(_cfg.LinkWaitMs), ct);
            proxy.AttachLink(link);
            await link.SendAsync(MessageType.Hello, 0, LinkHello.Encode(new LinkHello("secondary", _cfg.VmName, _cfg.MemoryBytes, VmSpecs.ConfigHash(_cfg))), ct);
            await using var heartbeat = _heartbeat = new HeartbeatMonitor(
                TimeSpan.FromMilliseconds(_cfg.HeartbeatIntervalMs), TimeSpan.FromMilliseconds(_cfg.SyncHeartbeatTimeoutMs),
                c => link.SendAsync(MessageType.Heartbeat, _epoch, ReadOnlyMemory<byte>.Empty, c),
                reason => _ = PeerSilentAsync("heartbeat: " + reason), TimeProvider.System, _loggers.CreateLogger("heartbeat"));
            heartbeat.Start();
            _status.State = "syncing";
            WriteStatus();
            // Not tied to ct: on a stop the goodbye must still go out before the link closes.
            var receive = Task.Run(() => link.RunReceiveLoopAsync(OnMessageAsync, CancellationToken.None));
            _ = link.Closed.ContinueWith(_ => PeerSilentAsync("link closed: " + link.CloseReason), TaskScheduler.Default);
            var statusLoop = Task.Run(() => _reporter.RunAsync(ct), ct);
            try
            {
                return await _done.Task.WaitAsync(ct);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                if (!proxy.FailedOver && Volatile.Read(ref _decision) == 0)
                    await Farewell.SendAndCloseAsync(link, FarewellKind.Survive, "secondary stopping", _epoch, _log);
                throw;
            }
            finally
            {
                // The memory cache is freed when this scope ends: nothing may still be writing pages into it.
                link.Close("secondary stopping");
                await receive.WaitAsync(TimeSpan.FromSeconds(10)).ContinueWith(_ => { }, TaskScheduler.Default);
                await _commit.WaitAsync(TimeSpan.FromSeconds(30)).ContinueWith(_ => { }, TaskScheduler.Default);
                // The SVMs go before the disk they use is closed.
                await StopVmsAsync();
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            _status.State = "stopped";
            WriteStatus();
            return 0;
        }
        catch (Exception e)
        {
            if (e is IOException or TimeoutException or System.Net.Sockets.SocketException)
                _log.LogError("secondary failed: {Error}", e.Message);
            else
                _log.LogError(e, "secondary failed");
            _status.State = "error";
            _status.Error = e.Message;
            WriteStatus();
            return 1;
        }
        finally
        {
            await StopVmsAsync();
            try
            {
                File.Delete(_ramPath);
            }
            catch (IOException)
            {
            }
        }
    }

    /// <summary>Kills the SVM and the standby (waiting for a standby still starting, at most 35 s).</summary>
    private async Task StopVmsAsync()
    {
        var active = Interlocked.Exchange(ref _active, null);
        if (active != null)
            await active.DisposeAsync();
        var standby = Interlocked.Exchange(ref _standby, null);
        if (standby != null)
        {
            try
            {
                await (await standby.WaitAsync(TimeSpan.FromSeconds(35))).DisposeAsync();
            }
            catch (Exception e)
            {
                _log.LogDebug("standby not stopped cleanly: {Error}", e.Message);
            }
        }
    }

    private Task<SvmInstance> StartStandby()
    {
        int gen = Interlocked.Increment(ref _generation);
        var task = SvmInstance.StartStandbyAsync(_cfg, gen, _ramPath, _loggers, _ct);
        task.ContinueWith(t =>
        {
            if (t.IsCompletedSuccessfully)
            {
                _status.StandbyPid = t.Result.Qemu.Pid;
                WriteStatus();
            }
            else
            {
                _log.LogError("standby SVM did not start: {Error}", t.Exception?.GetBaseException().Message);
            }
        }, TaskScheduler.Default);
        return task;
    }

    private ValueTask OnMessageAsync(MessageType type, ulong epoch, ReadOnlySequence<byte> payload)
    {
        _heartbeat?.HeartbeatReceived();
        switch (type)
        {
            case MessageType.Heartbeat:
                break;
            case MessageType.Hello:
                var hello = LinkHello.Decode(payload);
                if (hello.MemoryBytes != _cfg.MemoryBytes || hello.VmName != _cfg.VmName || hello.ConfigHash != VmSpecs.ConfigHash(_cfg))
                    _link?.Close($"primary describes another VM ({hello.VmName}, {hello.MemoryBytes} bytes, config {hello.ConfigHash})");
                break;
            case MessageType.ClientFrame:
                _proxy!.OnClientFrame(payload);
                break;
            case MessageType.DiskSyncBegin or MessageType.DiskSyncData or MessageType.DiskSyncEnd or MessageType.DiskWrites:
                OnDiskMessage(type, payload);
                break;
            case MessageType.CheckpointBegin:
                if (_disk != null && !_disk.Synced)
                {
                    _link?.Close($"checkpoint {epoch} announced before the disk sync ended");
                    break;
                }
                if (epoch != _epoch + 1 || _receiving != 0)
                {
                    _link?.Close($"checkpoint {epoch} announced while at epoch {_epoch} (receiving {_receiving})");
                    break;
                }
                _proxy!.Hold();
                _receiving = epoch;
                _deviceState.ResetWrittenCount();
                _cache!.TakeReceivedCount();
                break;
            case MessageType.CheckpointPages:
                if (epoch != _receiving)
                {
                    _link?.Close($"pages for epoch {epoch} while receiving {_receiving}");
                    break;
                }
                try
                {
                    _cache!.Apply(payload);
                }
                catch (InvalidDataException e)
                {
                    _link?.Close("bad page batch: " + e.Message);
                }
                break;
            case MessageType.CheckpointDeviceState:
                if (epoch != _receiving)
                {
                    _link?.Close($"device state for epoch {epoch} while receiving {_receiving}");
                    break;
                }
                foreach (var seg in payload)
                    _deviceState.Write(seg.Span);
                break;
            case MessageType.CheckpointEnd:
                if (epoch != _receiving)
                {
                    _link?.Close($"checkpoint end for epoch {epoch} while receiving {_receiving}");
                    break;
                }
                _commit = Task.Run(() => CommitAsync(epoch));
                break;
            case MessageType.Goodbye:
                var (kind, why) = Farewell.Decode(payload);
                if (kind == FarewellKind.Fence)
                {
                    if (Interlocked.CompareExchange(ref _decision, Fenced, 0) == 0)
                        _ = Task.Run(() => FenceAsync("the primary continues without this secondary: " + why));
                    else
                        _log.LogWarning("the primary asked this secondary to stop, but it is already taking over ({Why})", why);
                }
                else
                    PrimaryLost("primary said goodbye: " + why);
                break;
            default:
                _link?.Close($"unexpected message {type} from the primary");
                break;
        }
        return ValueTask.CompletedTask;
    }

    private void OnDiskMessage(MessageType type, ReadOnlySequence<byte> payload)
    {
        var disk = _disk;
        if (disk == null)
        {
            _link?.Close($"disk message {type} but this secondary has no disk_image configured");
            return;
        }
        try
        {
            switch (type)
            {
                case MessageType.DiskSyncBegin:
                    disk.BeginSync(payload);
                    _standby = StartStandby();
                    break;
                case MessageType.DiskSyncData:
                    disk.SyncData(payload);
                    break;
                case MessageType.DiskSyncEnd:
                    disk.EndSync(payload);
                    WriteStatus();
                    break;
                default:
                    disk.Receive(payload);
                    break;
            }
        }
        catch (Exception e) when (e is InvalidDataException or IOException or ArgumentException or InvalidOperationException)
        {
            _link?.Close($"disk: {e.Message}");
        }
    }

    private async Task CommitAsync(ulong epoch)
    {
        await _commitLock.WaitAsync();
        var sw = Stopwatch.StartNew();
        try
        {
            var standby = await _standby!.WaitAsync(TimeSpan.FromSeconds(30));
            if (_active != null)
                await _active.Qemu.StopAsync();
            // The old SVM is stopped (QEMU drained its disk I/O): drop its overlay, apply the PVM's writes up to the barrier.
            _disk?.Commit(epoch);
            int written = _cache!.RestoreInto(_ram!);
            await standby.Qemu.LoadDeviceStateAsync(_deviceState.WrittenMemory, TimeSpan.FromSeconds(10), CancellationToken.None);
            var old = _active;
            _active = standby;
            _proxy!.Activate(standby.Connection, epoch);
            _epoch = epoch;
            _receiving = 0;
            // "Loaded" goes out before the new SVM runs, so on the link it precedes every frame of the new epoch.
            var link = _link;
            if (link != null && Volatile.Read(ref _decision) == 0)
            {
                try
                {
                    await link.SendAsync(MessageType.CheckpointLoaded, epoch, ReadOnlyMemory<byte>.Empty);
                }
                catch (Exception e)
                {
                    _log.LogWarning("could not acknowledge checkpoint {Epoch}: {Error}", epoch, e.Message);
                }
            }
            await standby.Qemu.ContAsync();
            _ = Task.Run(() => _proxy.RunSvmOutputAsync(standby.Connection));
            _ = standby.Qemu.Exited.ContinueWith(_ => SvmExited(standby), TaskScheduler.Default);
            if (old != null)
                await old.DisposeAsync();
            _standby = StartStandby();
            _status.Epoch = epoch;
            _status.VmPid = standby.Qemu.Pid;
            if (epoch == 1)
            {
                _status.State = "protected";
                if (_heartbeat is { } hb)
                    hb.Timeout = TimeSpan.FromMilliseconds(_cfg.HeartbeatTimeoutMs);
            }
            else
                _status.Checkpoints++;
            _status.PagesShipped += written;
            WriteStatus();
            _log.LogInformation("checkpoint {Epoch} loaded: {Pages} pages restored, {State} KB device state, {Ms:F1} ms",
                epoch, written, _deviceState.WrittenCount / 1024, sw.Elapsed.TotalMilliseconds);
        }
        catch (Exception e)
        {
            _log.LogError(e, "loading checkpoint {Epoch} failed", epoch);
            _status.State = "error";
            _status.Error = "checkpoint load failed: " + e.Message;
            WriteStatus();
            await Farewell.SendAndCloseAsync(_link, FarewellKind.Survive, "checkpoint load failed: " + e.Message, epoch, _log);
            _done.TrySetResult(1);
        }
        finally
        {
            _commitLock.Release();
        }
    }

    private void SvmExited(SvmInstance svm)
    {
        if (!ReferenceEquals(svm, _active))
            return;
        _log.LogError("the SVM (pid {Pid}) exited", svm.Qemu.Pid);
        if (_proxy?.FailedOver == true)
        {
            _status.State = "error";
            _status.Error = "SVM exited after failover";
            WriteStatus();
            _done.TrySetResult(1);
        }
        else
        {
            _link?.Close("SVM exited");
            _done.TrySetResult(1);
        }
    }

    /// <summary>
    /// The primary went silent (heartbeat timeout or link closed). Waits a short grace period first: after a stall of
    /// this host a <c>Goodbye(Fence)</c> from a primary that gave up on us may still be unread on the link, and then
    /// this secondary must stop its SVM instead of taking over (no split brain after a transient stall).
    /// </summary>
    private async Task PeerSilentAsync(string reason)
    {
        await Task.Delay(Farewell.PeerLostGrace);
        if (Volatile.Read(ref _decision) == 0)
            PrimaryLost(reason);
    }

    /// <summary>The primary carries on alone: stop the SVM and the standby, never take over.</summary>
    private async Task FenceAsync(string reason)
    {
        // The decision is taken by the caller (Interlocked) before this runs.
        _log.LogError("fenced ({Reason}): stopping the SVM", reason);
        _link?.Close(reason);
        await _commit.WaitAsync(TimeSpan.FromSeconds(30)).ContinueWith(_ => { }, TaskScheduler.Default);
        await StopVmsAsync();
        _status.State = "fenced";
        _status.Error = "fenced: " + reason;
        _status.VmPid = 0;
        _status.StandbyPid = 0;
        WriteStatus();
        _done.TrySetResult(4);
    }

    private void PrimaryLost(string reason)
    {
        if (Interlocked.CompareExchange(ref _decision, TakingOver, 0) != 0)
            return;
        long at = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        _log.LogWarning("primary lost ({Reason}); failing over", reason);
        _status.PeerLostAtUnixMs = at;
        _status.PeerLostReason = reason;
        WriteStatus();
        _heartbeat?.PeerLost(reason);
        _ = Task.Run(FailoverAsync);
    }

    private async Task FailoverAsync()
    {
        try
        {
            // A checkpoint whose end arrived is complete: finish loading it. A partial one is discarded.
            await _commit.WaitAsync(TimeSpan.FromSeconds(30));
            await _commitLock.WaitAsync();
            try
            {
                if (_receiving != 0)
                    _log.LogWarning("discarding partial checkpoint {Epoch}", _receiving);
                _receiving = 0;
                if (_active != null)
                {
                    // Tell a primary that is only stalled to stop its PVM (it reads this when it runs again).
                    await Farewell.SendAndCloseAsync(_link, FarewellKind.Fence, "the secondary took over", _epoch, _log);
                }
                else
                {
                    // Nothing to take over with: a primary that is still there must carry on.
                    await Farewell.SendAndCloseAsync(_link, FarewellKind.Survive, "the secondary has no synchronised SVM", _epoch, _log);
                }
                if (_active == null)
                {
                    _status.State = "error";
                    _status.Error = "primary lost before the initial sync completed: nothing to fail over to";
                    WriteStatus();
                    _done.TrySetResult(3);
                    return;
                }
                // The SVM keeps its own disk writes since the last checkpoint; the PVM's later writes are dropped.
                _disk?.Failover();
                var tap = TapDevice.Open(_cfg.TapName);
                var garp = new byte[GratuitousArp.FrameLength];
                GratuitousArp.Build(garp, PhysicalAddress.Parse(_cfg.GuestMac.Replace(':', '-')), IPAddress.Parse(_cfg.GuestIp));
                _proxy!.Failover(tap, garp);
                _status.Role = "primary";
                _status.FailedOver = true;
                _status.State = "failed-over";
                _status.FailoverDoneAtUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
                WriteStatus();
                _log.LogWarning("failover done: SVM (pid {Pid}) serves clients at epoch {Epoch}", _active.Qemu.Pid, _epoch);
            }
            finally
            {
                _commitLock.Release();
            }
            var standby = _standby;
            _standby = null;
            if (standby != null)
            {
                try
                {
                    await (await standby.WaitAsync(TimeSpan.FromSeconds(30))).DisposeAsync();
                }
                catch (Exception)
                {
                }
                _status.StandbyPid = 0;
                WriteStatus();
            }
        }
        catch (Exception e)
        {
            _log.LogError(e, "failover failed");
            _status.State = "error";
            _status.Error = "failover failed: " + e.Message;
            WriteStatus();
            _done.TrySetResult(1);
        }
    }

    private void WriteStatus() => _reporter.Write();

    private void RefreshDiskStatus()
    {
        if (_status.Disk is { } d)
            _disk?.Report(d);
    }
}
