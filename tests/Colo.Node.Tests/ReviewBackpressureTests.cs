using System.Net.Sockets;
using Colo.Node.Primary;
using Colo.Node.Tests.Support;
using static Colo.Node.Tests.Support.PrimaryProxyRig;

namespace Colo.Node.Tests;

/// <summary>
/// Review of <see cref="PrimaryProxy"/>'s backpressure and its "PVM stopped for a checkpoint" mode, played the way
/// <see cref="CheckpointSender"/> drives it (stop → <see cref="PrimaryProxy.PvmStoppedForCheckpoint"/> → commit →
/// <see cref="PrimaryProxy.PvmResuming"/> → cont), against a fake PVM on a real unix socket. The output-commit rule under
/// test: nothing the PVM sends after it resumes reaches the client before the SVM produced it or a later checkpoint
/// covers it.
/// </summary>
public sealed class ReviewBackpressureTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("colo-review-bp-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public async Task OutputAfterResume_IsHeldUntilTheSvmAgrees_NotReleasedByTheCommitBeforeIt()
    {
        await using var rig = await PrimaryProxyRig.StartAsync(_dir, checksums: false);
        await rig.WriteAsync(0, 10);
        await WaitUntilAsync(() => rig.Pvm.FramesRead == 10, "the proxy to read the first epoch's output");

        // Checkpoint: the PVM stops; what it sent before the stop (10..14) is read and released by the commit.
        rig.Proxy.PvmStoppedForCheckpoint();
        await rig.WriteAsync(10, 15);
        await WaitUntilAsync(() => rig.Pvm.FramesRead == 15, "the proxy to read the output sent before the stop");
        rig.Commit();
        rig.Proxy.PvmResuming();
        Assert.Equal(rig.Sent.Take(15), rig.Client.Snapshot());

        // The PVM runs again: its new output waits for the SVM.
        await rig.WriteAsync(15, 20);
        await WaitUntilAsync(() => rig.Pvm.FramesRead == 20, "the proxy to read the output sent after the resume");
        await Task.Delay(100); // the 20 ms tick runs: a compare timeout (1 min here) must not release anything either
        Assert.Equal(15, rig.Client.Count);
        for (int i = 15; i < 18; i++)
            rig.Proxy.OnSvmFrame(rig.Sent[i]);
        Assert.Equal(rig.Sent.Take(18), rig.Client.Snapshot());
        Dictionary<string, long> c = rig.Proxy.Counters();
        Assert.Equal(2, c["HeldFrames"]);
        Assert.Equal(15, c["ReleasedOnCheckpoint"]);
        Assert.Equal(0, c["Mismatches"]);
    }

    [Fact]
    public async Task OutputReadAfterTheCommit_StaysHeld_UntilTheNextCommit()
    {
        // The commit releases only what the reader had passed to the engine. Output the stopped PVM had sent but the
        // reader had not yet read when the commit came (the reader lagging behind the checkpoint) is held into the next
        // epoch: safe (never released early), but the SVM, restored past it, never sends it again.
        await using var rig = await PrimaryProxyRig.StartAsync(_dir, checksums: false);
        rig.Proxy.PvmStoppedForCheckpoint();
        rig.Commit();
        await rig.WriteAsync(0, 3);
        await WaitUntilAsync(() => rig.Pvm.FramesRead == 3, "the proxy to read the late output");
        rig.Proxy.PvmResuming();
        await Task.Delay(100);
        Assert.Equal(0, rig.Client.Count);
        rig.Commit();
        Assert.Equal(rig.Sent.Take(3), rig.Client.Snapshot());
    }

    [Fact]
    public async Task CheckpointFails_TheBoundAppliesAgain_UntilTheSecondaryIsDeclaredLost()
    {
        await using var rig = await PrimaryProxyRig.StartAsync(_dir, checksums: false);
        Task writer = rig.WriteAsync(0, FrameCount);
        await WaitUntilAsync(() => rig.Proxy.Counters()["pvm_backpressure_episodes"] == 1, "a backpressure episode");
        long stalledAt = await WaitStableAsync(() => rig.Written, "the fake PVM's writes to block");

        // The checkpoint stops the PVM: the socket's content is read past the bound.
        rig.PauseWriter();
        rig.Proxy.PvmStoppedForCheckpoint();
        await WaitUntilAsync(() => writer.IsCompleted, "the fake PVM's last write");
        long written = rig.Written;
        Assert.True(written > stalledAt && written < FrameCount, $"written {written}, stalled at {stalledAt}");
        await WaitUntilAsync(() => rig.Pvm.FramesRead == written, "the proxy to read the stopped PVM's output");

        // The checkpoint fails (no commit); the PVM resumes and sends on. Over the bound, nothing more is read.
        rig.Proxy.PvmResuming();
        rig.ResumeWriter();
        writer = rig.WriteAsync((int)written, FrameCount);
        long read = rig.Pvm.FramesRead;
        await WaitStableAsync(() => rig.Written, "the fake PVM's writes to block again");
        long readAfter = await WaitStableAsync(() => rig.Pvm.FramesRead, "the proxy to stop reading");
        // The read already waiting when the PVM resumed completes: one frame, as at any crossing of the bound.
        Assert.InRange(readAfter, read, read + 1);
        Assert.Equal(0, rig.Client.Count);
        Assert.Equal(2, rig.Proxy.Counters()["pvm_backpressure_episodes"]);

        // The primary then declares the secondary lost: everything flows, in order.
        rig.Proxy.Unprotect();
        await writer.WaitAsync(WaitTimeout);
        await WaitUntilAsync(() => rig.Client.Count == FrameCount, "every frame released");
        Assert.Equal(rig.Sent, rig.Client.Snapshot());
    }

    [Fact]
    public async Task PvmDiesWhileStopped_NothingReleased_ThenUnprotectReleasesWhatWasReadInOrder()
    {
        await using var rig = await PrimaryProxyRig.StartAsync(_dir, checksums: false);
        Task writer = rig.WriteAsync(0, FrameCount);
        await WaitUntilAsync(() => rig.Proxy.Counters()["pvm_backpressure_episodes"] == 1, "a backpressure episode");
        await WaitStableAsync(() => rig.Written, "the fake PVM's writes to block");
        rig.PauseWriter();
        rig.Proxy.PvmStoppedForCheckpoint();
        await WaitUntilAsync(() => writer.IsCompleted, "the fake PVM's last write");
        long written = rig.Written;
        await WaitUntilAsync(() => rig.Pvm.FramesRead == written, "the proxy to read the stopped PVM's output");

        rig.PvmSocket.Shutdown(SocketShutdown.Both);
        rig.PvmSocket.Close();
        await rig.Proxy.PvmClosed.WaitAsync(WaitTimeout);
        Assert.Equal(0, rig.Client.Count);
        rig.Proxy.PvmResuming();
        rig.Proxy.Unprotect();
        Assert.Equal(rig.Sent.Take((int)written), rig.Client.Snapshot());
    }

    [Fact]
    public async Task SecondaryLostWhileStopped_EverythingReleased_NoFurtherBackpressure()
    {
        await using var rig = await PrimaryProxyRig.StartAsync(_dir, checksums: false);
        Task writer = rig.WriteAsync(0, FrameCount);
        await WaitUntilAsync(() => rig.Proxy.Counters()["pvm_backpressure_episodes"] == 1, "a backpressure episode");
        await WaitStableAsync(() => rig.Written, "the fake PVM's writes to block");
        rig.PauseWriter();
        rig.Proxy.PvmStoppedForCheckpoint();
        await WaitUntilAsync(() => writer.IsCompleted, "the fake PVM's last write");
        rig.Proxy.Unprotect();
        rig.Proxy.PvmResuming();
        rig.ResumeWriter();
        await rig.WriteAsync((int)rig.Written, FrameCount).WaitAsync(WaitTimeout);
        await WaitUntilAsync(() => rig.Client.Count == FrameCount, "every frame released");
        Assert.Equal(rig.Sent, rig.Client.Snapshot());
        Assert.Equal(1, rig.Proxy.Counters()["pvm_backpressure_episodes"]);
    }

    [Fact]
    public async Task CommitArrivingAfterUnprotect_DoesNotReprotect_OutputKeepsFlowing()
    {
        // PrimaryNode: the secondary's Loaded completes the checkpoint's wait (its continuation runs on the thread pool)
        // and the receive loop goes straight on to a Goodbye sent just after it (e.g. the secondary's "checkpoint load
        // failed" when its cont fails) → SecondaryLost → Unprotect. If the checkpoint's commit runs after that, it must not
        // put the engine back in protected mode: no SVM output will ever come, the scheduler has stopped, and the PVM's
        // output would be held for good (and, over the bound, its socket no longer read at all).
        await using var rig = await PrimaryProxyRig.StartAsync(_dir, checksums: false);
        rig.Proxy.PvmStoppedForCheckpoint();
        rig.Proxy.Unprotect();
        rig.Commit();
        rig.Proxy.PvmResuming();
        await rig.WriteAsync(0, FrameCount).WaitAsync(WaitTimeout);
        await WaitUntilAsync(() => rig.Client.Count == FrameCount, "the unprotected PVM's output to pass through");
        Assert.Equal(rig.Sent, rig.Client.Snapshot());
    }

    [Fact]
    public async Task BackpressureMs_NeverGoesBackwards_WhileEpisodesStartAndEnd()
    {
        // The status adds the episode under way to the ended ones; an episode ending between the two reads must not make
        // the figure drop (a monitor taking differences would see negative time) or jump.
        await using var rig = await PrimaryProxyRig.StartAsync(_dir, checksums: false);
        rig.StartController(delay: TimeSpan.FromMilliseconds(2));
        var stop = new CancellationTokenSource();
        long drops = 0, samples = 0;
        var poller = Task.Run(() =>
        {
            long last = 0;
            while (!stop.IsCancellationRequested)
            {
                long ms = rig.Proxy.Counters()["pvm_backpressure_ms"];
                if (ms < last)
                    drops++;
                last = Math.Max(last, ms);
                samples++;
            }
        });
        for (int round = 0; round < 6; round++)
            await rig.WriteAsync(round * FrameCount, (round + 1) * FrameCount).WaitAsync(WaitTimeout * 2);
        await stop.CancelAsync();
        await poller;
        long episodes = rig.Proxy.Counters()["pvm_backpressure_episodes"];
        Assert.True(episodes >= 20, $"only {episodes} episodes");
        Assert.True(drops == 0, $"pvm_backpressure_ms went backwards {drops} times in {samples} samples over {episodes} episodes");
    }
}
