using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using Colo.Checkpoint;
using Colo.Link;
using Colo.Vm;
using Microsoft.Extensions.Logging;

namespace Colo.Node.Primary;

/// <summary>Outcome of one checkpoint transaction.</summary>
internal readonly record struct CheckpointResult(int Pages, int DeviceStateBytes, double PauseMs, string? Error);

/// <summary>
/// The checkpoint transaction on the primary, top to bottom as the protocol (cf. QEMU
/// migration/colo.c): stop the PVM, announce the epoch, mark the disk barrier, ship changed pages, capture and ship the
/// device state, wait until the disk writes up to the barrier are on the link, end, wait for the secondary's "loaded", commit the compare engine, resume.
/// One exit path: the PVM is resumed whatever happens. Pages of a failed shipment are marked
/// dirty again so the next (full) synchronisation cannot miss them.
/// </summary>
internal sealed class CheckpointSender
{
    private readonly QemuProcess _pvm;
    private readonly GuestRam _ram;
    private readonly LinkConnection _link;
    private readonly PrimaryDisk? _disk;
    private readonly NodeConfig _cfg;
    private readonly ILogger _log;
    private readonly PageTracker _tracker;
    private readonly int[] _changed;
    private readonly byte[] _batch = new byte[PageBatch.PagesPerBatch * PageBatch.RecordSize];
    private readonly ArrayBufferWriter<byte> _deviceState = new(1 << 20);

    public CheckpointSender(QemuProcess pvm, GuestRam ram, LinkConnection link, PrimaryDisk? disk, NodeConfig cfg, ILogger log)
    {
        _disk = disk;
        _pvm = pvm;
        _ram = ram;
        _link = link;
        _cfg = cfg;
        _log = log;
        _tracker = new PageTracker(ram.PageCount);
        _changed = new int[ram.PageCount];
    }

    /// <param name="epoch">Epoch of this checkpoint.</param>
    /// <param name="full">Ship every page (initial sync).</param>
    /// <param name="loaded">Completes with the epoch the secondary acknowledged.</param>
    /// <param name="proxy">The proxy whose held output the checkpoint commits.</param>
    /// <param name="ct">Cancels the transaction (the PVM is still resumed).</param>
    /// <param name="beforeCommit">Called once the secondary acknowledged, just before held output is released: checkpoint requests made up to here are covered by this checkpoint.</param>
    public async Task<CheckpointResult> RunAsync(ulong epoch, bool full, Task<ulong> loaded, PrimaryProxy proxy, Action beforeCommit, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        int pages = 0;
        bool stopped = false;
        try
        {
            // Marked before the call: a stop that times out may still take effect, and the PVM must then be resumed.
            stopped = true;
            await _pvm.StopAsync();
            proxy.PvmStoppedForCheckpoint();
            await _link.SendAsync(MessageType.CheckpointBegin, epoch, ReadOnlyMemory<byte>.Empty, ct);
            // The PVM is stopped, so QEMU has drained its disk I/O: every write of this epoch is in the stream.
            _disk?.MarkBarrier(epoch);

            pages = _tracker.Scan(_ram, _changed, all: full);
            for (int i = 0; i < pages; i += PageBatch.PagesPerBatch)
            {
                int count = Math.Min(PageBatch.PagesPerBatch, pages - i);
                int len = 0;
                for (int k = 0; k < count; k++)
                {
                    int page = _changed[i + k];
                    len += PageBatch.WriteRecord(_batch.AsSpan(len), page, _ram.Page(page));
                }
                await _link.SendAsync(MessageType.CheckpointPages, epoch, _batch.AsMemory(0, len), ct);
            }

            _deviceState.ResetWrittenCount();
            await _pvm.CaptureDeviceStateAsync(_deviceState, TimeSpan.FromSeconds(10), ct);
            var state = _deviceState.WrittenMemory;
            const int chunk = 4 << 20;
            for (int off = 0; off < state.Length; off += chunk)
                await _link.SendAsync(MessageType.CheckpointDeviceState, epoch, state.Slice(off, Math.Min(chunk, state.Length - off)), ct);

            if (_disk != null)
                await _disk.WaitBarrierSentAsync(epoch, TimeSpan.FromMilliseconds(_cfg.CheckpointTimeoutMs), ct);
            byte[] end = new byte[8];
            BinaryPrimitives.WriteInt32BigEndian(end, pages);
            BinaryPrimitives.WriteInt32BigEndian(end.AsSpan(4), state.Length);
            await _link.SendAsync(MessageType.CheckpointEnd, epoch, end, ct);

            ulong ack = await loaded.WaitAsync(TimeSpan.FromMilliseconds(_cfg.CheckpointTimeoutMs), ct);
            if (ack != epoch)
                throw new InvalidDataException($"secondary acknowledged epoch {ack}, expected {epoch}");
            beforeCommit();
            proxy.CheckpointCommitted(epoch);
            return new CheckpointResult(pages, state.Length, 0, null) with { PauseMs = sw.Elapsed.TotalMilliseconds };
        }
        catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            _tracker.Invalidate(_changed.AsSpan(0, pages));
            _log.LogWarning("checkpoint {Epoch} failed: {Error}", epoch, e.Message);
            return new CheckpointResult(pages, 0, sw.Elapsed.TotalMilliseconds, e.GetType().Name + ": " + e.Message);
        }
        finally
        {
            proxy.PvmResuming();
            if (stopped && !_pvm.Exited.IsCompleted)
            {
                try
                {
                    await _pvm.ContAsync();
                }
                catch (Exception e)
                {
                    _log.LogError("PVM did not resume: {Error}", e.Message);
                }
            }
        }
    }
}
