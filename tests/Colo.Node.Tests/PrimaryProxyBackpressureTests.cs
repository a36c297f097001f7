using System.Diagnostics;
using System.Net.Sockets;
using Colo.Node.Primary;
using Colo.Node.Tests.Support;
using Colo.Proxy;
using Xunit;
using static Colo.Node.Tests.Support.PrimaryProxyRig;

namespace Colo.Node.Tests;

/// <summary>
/// <see cref="PrimaryProxy"/>'s backpressure on the PVM's <c>-netdev stream</c> socket, driven over a real unix socket by
/// a fake PVM QEMU that writes guest TCP output (4-byte big-endian length + frame) the secondary never answers. The
/// client side is an in-memory <see cref="IClientPort"/> recording every released frame.
/// </summary>
public sealed class PrimaryProxyBackpressureTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("colo-bp-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public async Task HeldOutputOverTheBound_StopsReadingThePvm_UntilCheckpointCommits_ThenEveryFrameIsReleasedInOrder()
    {
        await using var rig = await PrimaryProxyRig.StartAsync(_dir, protect: true);
        rig.StartWriter();

        Stall stall = await StallAsync(rig);

        // (3) The test now plays the checkpoint controller: every request is answered by a commit, which releases what is
        // held; the proxy resumes reading, fills up to the bound again, requests again, and so on.
        rig.StartController();
        await WaitUntilAsync(() => rig.WriterDone, "the fake PVM to write every frame");
        await WaitUntilAsync(() => rig.Pvm.FramesRead == FrameCount, "the proxy to read every frame");
        // The tail (below the bound) is released by the next checkpoint, as a periodic one would.
        rig.Commit();
        await WaitUntilAsync(() => rig.Client.Count == FrameCount, "every frame to be released to the client side");

        Assert.Equal(rig.Sent, rig.Client.Snapshot());
        Dictionary<string, long> c = rig.Proxy.Counters();
        Assert.Equal(FrameCount, c["ReleasedOnCheckpoint"]);
        Assert.Equal(0, c["HeldFrames"]);
        Assert.Equal(0, c["tap_write_failures"]);
        Assert.Equal(0, rig.Pvm.FramesTooLongForBuffer);
        // Each refill crosses the bound again: one episode per commit except the last (partial) fill.
        Assert.True(c["pvm_backpressure_episodes"] >= 2, $"episodes {c["pvm_backpressure_episodes"]}");
        Assert.True(c["pvm_backpressure_ms"] >= stall.ObservedMs, $"backpressure ms {c["pvm_backpressure_ms"]} < {stall.ObservedMs} observed stalled");
        Assert.True(c["QueueFullCheckpoints"] >= 2, $"queue-full requests {c["QueueFullCheckpoints"]}");
        Assert.True(c["PeakHeldBytes"] <= Bound + FrameLength, $"peak held {c["PeakHeldBytes"]} > bound {Bound} + one frame");
        Assert.All(rig.Reasons(), r => Assert.Equal(CheckpointReason.QueueFull, r));
    }

    [Fact]
    public async Task PvmStoppedForCheckpoint_OutputLeftInTheSocketIsReadPastTheBound_AndReleasedByThatCommit()
    {
        await using var rig = await PrimaryProxyRig.StartAsync(_dir, protect: true);
        rig.StartWriter();
        await StallAsync(rig);

        // The checkpoint stops the PVM: the guest sends nothing more, but its socket still holds unread output.
        rig.PauseWriter();
        rig.Proxy.PvmStoppedForCheckpoint();
        await WaitUntilAsync(() => rig.WriterFinished, "the fake PVM's last write to complete once the proxy reads");
        long written = rig.Written;
        Assert.True(written < FrameCount, "the writer was meant to stop before its last frame");
        await WaitUntilAsync(() => rig.Pvm.FramesRead == written, "the proxy to read everything in the socket");
        Assert.True(rig.Proxy.Counters()["HeldBytes"] > Bound + FrameLength, "the stopped PVM's output was read past the bound");

        // The commit covers all of it: released now, nothing left for the next epoch, no further checkpoint request.
        rig.Commit();
        rig.Proxy.PvmResuming();
        Assert.Equal(rig.Sent.Take((int)written), rig.Client.Snapshot());
        Dictionary<string, long> c = rig.Proxy.Counters();
        Assert.Equal(0, c["HeldFrames"]);
        Assert.Equal(written, c["ReleasedOnCheckpoint"]);
        Assert.Equal([CheckpointReason.QueueFull], rig.Reasons());
    }

    [Fact]
    public async Task SecondaryLostDuringBackpressure_PassThroughResumesReading_NothingDropped()
    {
        await using var rig = await PrimaryProxyRig.StartAsync(_dir, protect: true);
        rig.StartWriter();

        Stall stall = await StallAsync(rig);

        // No checkpoint comes: the secondary is lost instead. Pass-through releases what is held and ends the episode.
        rig.Proxy.Unprotect();
        await WaitUntilAsync(() => rig.WriterDone, "the fake PVM to write every frame");
        await WaitUntilAsync(() => rig.Client.Count == FrameCount, "every frame to be released to the client side");

        Assert.Equal(rig.Sent, rig.Client.Snapshot());
        Dictionary<string, long> c = rig.Proxy.Counters();
        Assert.Equal(FrameCount, c["ReleasedPassThrough"]);
        Assert.Equal(1, c["pvm_backpressure_episodes"]);
        Assert.True(c["pvm_backpressure_ms"] >= stall.ObservedMs, $"backpressure ms {c["pvm_backpressure_ms"]} < {stall.ObservedMs} observed stalled");
        Assert.Equal([CheckpointReason.QueueFull], rig.Reasons());
    }

    [Fact]
    public async Task Unprotected_OutputPassesThrough_NoBackpressure()
    {
        await using var rig = await PrimaryProxyRig.StartAsync(_dir, protect: false);
        rig.StartWriter();

        await WaitUntilAsync(() => rig.WriterDone, "the fake PVM to write every frame");
        await WaitUntilAsync(() => rig.Client.Count == FrameCount, "every frame to be released to the client side");

        Assert.Equal(rig.Sent, rig.Client.Snapshot());
        Dictionary<string, long> c = rig.Proxy.Counters();
        Assert.Equal(0, c["pvm_backpressure_episodes"]);
        Assert.Equal(0, c["pvm_backpressure_ms"]);
        Assert.Empty(rig.Reasons());
    }

    private readonly record struct Stall(long ObservedMs);

    /// <summary>
    /// Waits for the proxy to stop reading with the bound exceeded, checks (1) the QueueFull request, (2) that the
    /// proxy no longer reads the socket, which fills until the fake PVM's writes block, with at most one frame beyond
    /// the bound held, and (4) the episode counted; nothing is released meanwhile.
    /// </summary>
    private static async Task<Stall> StallAsync(PrimaryProxyRig rig)
    {
        await WaitUntilAsync(() => rig.Proxy.Counters()["pvm_backpressure_episodes"] >= 1, "a backpressure episode");
        var watch = Stopwatch.StartNew();

        // (1) The bound was exceeded and a QueueFull checkpoint requested (once).
        Assert.Equal([CheckpointReason.QueueFull], rig.Reasons());

        // (2) The fake PVM's writes block: the socket's send buffer fills because nobody reads it.
        await WaitUntilAsync(() => !rig.PvmSocket.Poll(TimeSpan.Zero, SelectMode.SelectWrite) || rig.WriterDone, "the fake PVM's socket to fill");
        Assert.False(rig.WriterDone, $"the fake PVM wrote all {FrameCount} frames without blocking");
        long written = await WaitStableAsync(() => rig.Written, "the fake PVM's writes to block");
        Assert.True(written < FrameCount, $"the fake PVM wrote all {FrameCount} frames without blocking");

        Dictionary<string, long> before = rig.Proxy.Counters();
        await Task.Delay(Quiet);
        Dictionary<string, long> c = rig.Proxy.Counters();
        long read = c["PvmFrames"];
        Assert.Equal(before["PvmFrames"], read);
        Assert.Equal(read, rig.Pvm.FramesRead);
        Assert.Equal(written, rig.Written);
        Assert.False(rig.PvmSocket.Poll(TimeSpan.FromMilliseconds(50), SelectMode.SelectWrite), "the fake PVM's socket became writable again");
        Assert.True(read < written, $"proxy read {read} of {written} frames written: nothing waits in the socket");
        Assert.True(read * FrameLength <= Bound + FrameLength, $"proxy read {read} frames ({read * FrameLength} bytes), bound {Bound}");
        // Held bytes count held frames plus the stream ring's capacity (which doubles as it grows); with these frame
        // sizes the frame that crosses the bound does not double the ring, so one frame is the whole overshoot.
        Assert.True(c["HeldBytes"] > Bound, $"held {c["HeldBytes"]} not over the bound {Bound}");
        Assert.True(c["HeldBytes"] <= Bound + FrameLength, $"held {c["HeldBytes"]} > bound {Bound} + one frame");
        Assert.True(c["PeakHeldBytes"] <= Bound + FrameLength, $"peak held {c["PeakHeldBytes"]} > bound {Bound} + one frame");
        // Nothing released (the SVM never answered) and nothing dropped: every frame read is held.
        Assert.Equal(0, rig.Client.Count);
        Assert.Equal(read, c["HeldFrames"]);

        // (4) The episode is counted while it lasts, and so is its time so far (the status shows a long stall).
        Assert.Equal(1, c["pvm_backpressure_episodes"]);
        long observed = watch.ElapsedMilliseconds;
        long shown = rig.Proxy.Counters()["pvm_backpressure_ms"];
        Assert.True(shown >= observed, $"backpressure ms {shown} < {observed} observed stalled, during the episode");
        return new Stall(observed);
    }
}
