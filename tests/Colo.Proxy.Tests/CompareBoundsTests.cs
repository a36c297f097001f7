using static Colo.Proxy.Tests.Frames;

namespace Colo.Proxy.Tests;

/// <summary>Queue bounds, the compare timeout under sustained traffic, and RST comparison (issue 4, items 1 and 4).</summary>
public class CompareBoundsTests
{
    [Fact]
    public void BulkTransfer_FillsTheGlobalQueue_ForcedCheckpoint_MemoryStaysUnderTheLimit()
    {
        // The PVM streams 1460-byte segments the SVM never sends; the checkpoint controller commits as soon as asked.
        const long limit = 256 * 1024;
        var h = new Harness(new CompareOptions { MaxHeldBytes = limit, MaxHeldBytesPerConnection = 1L << 40 });
        var payload = new byte[1460];
        uint seq = 1000;
        int checkpoints = 0;
        for (int i = 0; i < 2000; i++)
        {
            h.Pvm(Out(seq, 5000, ACK, payload));
            seq += 1460;
            if (h.Sink.Requests.Count > checkpoints)
            {
                Assert.Equal(CheckpointReason.QueueFull, h.Sink.Requests[^1]);
                checkpoints++;
                h.Engine.OnCheckpointCommitted();
            }
        }
        Assert.True(checkpoints >= 10, $"only {checkpoints} forced checkpoints");
        // Never more than the limit plus the one frame that crossed it.
        Assert.True(h.Engine.Counters.PeakHeldBytes <= limit + 1514, $"peak {h.Engine.Counters.PeakHeldBytes}");
        h.Engine.OnCheckpointCommitted();
        Assert.Equal(2000, h.Sink.Released.Count); // nothing dropped
    }

    [Fact]
    public void OneConnectionOverItsOwnLimit_QueueFull_WhileTheGlobalQueueHasRoom()
    {
        const long perConnection = 64 * 1024;
        var h = new Harness(new CompareOptions { MaxHeldBytes = 64L << 20, MaxHeldBytesPerConnection = perConnection });
        // Another connection holds a little too: it must not count against the first one's bound.
        h.Pvm(Out(1, 5000, ACK, new byte[1000], port: 40001));
        int sent = 0;
        while (h.Sink.Requests.Count == 0 && sent < 1000)
        {
            h.Pvm(Out(1000 + (uint)sent * 1460, 5000, ACK, new byte[1460]));
            sent++;
        }
        Assert.Equal(new[] { CheckpointReason.QueueFull }, h.Sink.Requests);
        Assert.InRange(sent, 10, (int)(perConnection / 1460) + 1); // frames and stream buffer both count
        Assert.True(h.Engine.Counters.HeldBytes < (64L << 20) / 100, "the global queue still had room");
        Assert.Contains("holds", h.Engine.LastCause);
        Assert.Empty(h.Sink.Released); // held, never dropped
        h.Engine.OnCheckpointCommitted();
        Assert.Equal(sent + 1, h.Sink.Released.Count);
    }

    [Fact]
    public void SvmOutOfOrderBeyondTheBound_Dropped_AndForcesACheckpoint()
    {
        var h = new Harness(new CompareOptions { MaxOutOfOrderSegments = 2 });
        h.Svm(Out(1000, 5000, ACK, new byte[10])); // starts the stream at 1000
        h.Svm(Out(2000, 5000, ACK, new byte[10])); // out of order (gap 1010..2000)
        h.Svm(Out(3000, 5000, ACK, new byte[10]));
        Assert.DoesNotContain(CheckpointReason.QueueFull, h.Sink.Requests);
        h.Svm(Out(4000, 5000, ACK, new byte[10]));
        Assert.Contains(CheckpointReason.QueueFull, h.Sink.Requests);
        Assert.Equal(1, h.Engine.Counters.SvmDropped);
    }

    [Fact]
    public void SvmSlightlyAheadDuringABulkStream_NoTimeoutCheckpoint_WhileThePvmKeepsMatching()
    {
        var h = new Harness();
        uint pvm = 1000, svm = 1000;
        var seg = new byte[100];
        // For 5 s of fake time the SVM stays one segment ahead and the PVM follows 10 ms later each time.
        h.Svm(Out(svm, 5000, ACK, seg));
        svm += 100;
        for (int i = 0; i < 500; i++)
        {
            h.Time.Advance(TimeSpan.FromMilliseconds(10));
            h.Svm(Out(svm, 5000, ACK, seg));
            svm += 100;
            h.Pvm(Out(pvm, 5000, ACK, seg));
            pvm += 100;
            h.Engine.OnTick();
        }
        Assert.Empty(h.Sink.Requests);
        Assert.Equal(500, h.Sink.Released.Count);
        // When the PVM stops following, the SVM's lead times out after the compare timeout.
        h.Time.Advance(TimeSpan.FromMilliseconds(1001));
        h.Engine.OnTick();
        Assert.Equal(new[] { CheckpointReason.Timeout }, h.Sink.Requests);
    }

    [Fact]
    public void Rst_SameSequence_Released()
    {
        var h = new Harness();
        byte[] rst = Out(1000, 0, RST, default);
        h.Pvm(rst);
        Assert.Empty(h.Sink.Released);
        h.Svm(Out(1000, 0, RST, default, ipId: 9));
        Assert.Equal(new[] { rst }, h.Sink.Released);
        Assert.Empty(h.Sink.Requests);
    }

    [Fact]
    public void Rst_DifferentSequence_NotReleased_TimeoutCheckpoint()
    {
        var h = new Harness();
        h.Pvm(Out(1000, 0, RST, default));
        h.Svm(Out(1234, 0, RST, default));
        Assert.Empty(h.Sink.Released);
        h.Time.Advance(TimeSpan.FromMilliseconds(1001));
        h.Engine.OnTick();
        Assert.Equal(new[] { CheckpointReason.Timeout }, h.Sink.Requests);
        h.Engine.OnCheckpointCommitted();
        Assert.Single(h.Sink.Released);
    }

    [Fact]
    public void SecondRstPair_WithANewSequenceNumber_Released_NoCheckpoint()
    {
        var h = new Harness();
        h.Pvm(Out(1000, 1, ACK, Frames.Bytes("abc")));
        h.Svm(Out(1000, 1, ACK, Frames.Bytes("abc")));
        h.Pvm(Out(1003, 0, RST, default));
        h.Svm(Out(1003, 0, RST, default));
        h.Pvm(Out(1001, 0, RST, default));
        h.Svm(Out(1001, 0, RST, default));
        Assert.Empty(h.Sink.Requests);
        Assert.Equal(3, h.Sink.Released.Count);
    }

    [Fact]
    public void RstAfterACheckpoint_SvmNeverSentOneBefore_Released_NoCheckpoint()
    {
        var h = new Harness();
        h.Pvm(Out(1000, 1, ACK, Frames.Bytes("abc")));
        h.Svm(Out(1000, 1, ACK, Frames.Bytes("abc")));
        h.Pvm(Out(1003, 0, RST, default));
        h.Engine.OnCheckpointCommitted();
        h.Pvm(Out(1003, 0, RST, default));
        h.Svm(Out(1003, 0, RST, default));
        Assert.Empty(h.Sink.Requests);
        Assert.Equal(3, h.Sink.Released.Count);
    }

    [Fact]
    public void FullTableOfOpenConnections_EvictsInBatches_AndStaysBounded()
    {
        const int limit = 1000;
        var h = new Harness(new CompareOptions { MaxConnections = limit });
        var sw = System.Diagnostics.Stopwatch.StartNew();
        for (int i = 0; i < 20_000; i++)
        {
            // Open connections (never closed: the client reset them, which the engine never sees), nothing held.
            byte[] synAck = Frames.Tcp(GuestIp, GuestPort, ClientIp + (uint)(i / 50_000), (ushort)(1024 + i % 50_000), (uint)i * 7919, 1, SYN | ACK, default);
            h.Svm(synAck);
            h.Pvm(synAck);
            h.Time.Advance(TimeSpan.FromMilliseconds(1));
        }
        Assert.True(h.Engine.Counters.Connections <= limit, $"{h.Engine.Counters.Connections} tracked");
        Assert.True(h.Engine.Counters.ConnectionsEvicted >= 19_000);
        Assert.Equal(20_000, h.Sink.Released.Count);
        Assert.Equal(0, h.Engine.Counters.InternalErrors);
    }
}
