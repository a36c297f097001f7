using Xunit.Abstractions;
using static Colo.Proxy.Tests.Frames;

namespace Colo.Proxy.Tests;

public class CompareEngineTests
{
    private readonly ITestOutputHelper _out;

    public CompareEngineTests(ITestOutputHelper output) => _out = output;

    private static byte[] B(string s) => Bytes(s);

    [Fact]
    public void Tcp_PvmSplit_SvmWhole_BothReleasedInOrder_NoCheckpoint()
    {
        var h = new Harness();
        byte[] p1 = Out(1000, 5000, ACK, B("abc"), ipId: 7);
        byte[] p2 = Out(1003, 5000, ACK | PSH, B("defghij"), ipId: 8);
        h.Pvm(p1);
        h.Pvm(p2);
        Assert.Empty(h.Sink.Released);
        h.Svm(Out(1000, 5000, ACK | PSH, B("abcdefghij"), ipId: 99, ttl: 63));
        Assert.Equal(2, h.Sink.Released.Count);
        Assert.Equal(p1, h.Sink.Released[0]);
        Assert.Equal(p2, h.Sink.Released[1]);
        Assert.Empty(h.Sink.Requests);
        Assert.Equal(0, h.Engine.Counters.HeldFrames);
        Assert.Equal(10, h.Engine.Counters.MatchedBytes);
    }

    [Fact]
    public void Tcp_DoubleTaggedQinQ_SplitDifferently_Matched()
    {
        var h = new Harness();
        (ushort, ushort)[] tags = { (0x88A8, 100), (0x8100, 42) };
        byte[] p1 = WithVlanTags(Out(1000, 5000, ACK, B("abc")), tags);
        byte[] p2 = WithVlanTags(Out(1003, 5000, ACK | PSH, B("defghij")), tags);
        h.Pvm(p1);
        h.Pvm(p2);
        h.Svm(WithVlanTags(Out(1000, 5000, ACK | PSH, B("abcdefghij"), ipId: 99, ttl: 63), tags));
        Assert.Equal(new[] { p1, p2 }, h.Sink.Released);
        Assert.Empty(h.Sink.Requests);
        Assert.Equal(1, h.Engine.ConnectionCount);
        Assert.Equal(0, h.Engine.Counters.PvmBadFrames);
    }

    [Fact]
    public void Tcp_PvmWhole_SvmSplit_Released_NoCheckpoint()
    {
        var h = new Harness();
        byte[] p = Out(1000, 5000, ACK | PSH, B("abcdefghij"));
        h.Pvm(p);
        h.Svm(Out(1000, 5000, ACK, B("abc")));
        Assert.Empty(h.Sink.Released);
        h.Svm(Out(1003, 5000, ACK | PSH, B("defghij")));
        Assert.Single(h.Sink.Released);
        Assert.Equal(p, h.Sink.Released[0]);
        Assert.Empty(h.Sink.Requests);
    }

    [Fact]
    public void Tcp_SvmFirst_ThenPvm_Released()
    {
        var h = new Harness();
        h.Svm(Out(1000, 5000, ACK, B("abcdefghij")));
        byte[] p1 = Out(1000, 5000, ACK, B("abcd"));
        byte[] p2 = Out(1004, 5000, ACK, B("efghij"));
        h.Pvm(p1);
        h.Pvm(p2);
        Assert.Equal(new[] { p1, p2 }, h.Sink.Released);
        Assert.Empty(h.Sink.Requests);
    }

    [Fact]
    public void Tcp_ByteDiffers_MismatchCheckpoint_NothingReleased()
    {
        var h = new Harness();
        h.Pvm(Out(1000, 5000, ACK, B("abcdefghij")));
        h.Svm(Out(1000, 5000, ACK, B("abcdeXghij")));
        Assert.Empty(h.Sink.Released);
        Assert.Equal(new[] { CheckpointReason.Mismatch }, h.Sink.Requests);
        Assert.Equal(1, h.Engine.Counters.GetCheckpointRequests(CheckpointReason.Mismatch));
        // Further traffic on the diverged connection stays held, and no duplicate request is raised.
        h.Pvm(Out(1010, 5000, ACK, B("k")));
        h.Svm(Out(1010, 5000, ACK, B("k")));
        Assert.Empty(h.Sink.Released);
        Assert.Single(h.Sink.Requests);
    }

    [Fact]
    public void Tcp_PvmAckBeyondSvmAck_HeldUntilSvmAcks()
    {
        var h = new Harness();
        byte[] p = Out(1000, 5010, ACK, B("abc"));
        h.Pvm(p);
        h.Svm(Out(1000, 5000, ACK, B("abc")));
        Assert.Empty(h.Sink.Released);
        h.Svm(Out(1003, 5005, ACK, default));
        Assert.Empty(h.Sink.Released);
        h.Svm(Out(1003, 5010, ACK, default));
        Assert.Single(h.Sink.Released);
        Assert.Equal(p, h.Sink.Released[0]);
        Assert.Empty(h.Sink.Requests);
    }

    [Fact]
    public void Tcp_PureAck_ReleasedWhenSvmAckedAsMuch()
    {
        var h = new Harness();
        byte[] a = Out(1000, 6000, ACK, default);
        h.Pvm(a);
        Assert.Empty(h.Sink.Released);
        h.Svm(Out(1000, 6000, ACK, default, ipId: 3));
        Assert.Single(h.Sink.Released);
    }

    [Fact]
    public void Tcp_AckWraparound_UsesSerialArithmetic()
    {
        var h = new Harness();
        byte[] p = Out(1000, 0x00000005, ACK, default);
        h.Pvm(p);
        h.Svm(Out(1000, 0xFFFFFFF0, ACK, default));
        Assert.Empty(h.Sink.Released);
        h.Svm(Out(1000, 0x00000010, ACK, default));
        Assert.Single(h.Sink.Released);
    }

    [Fact]
    public void SvmOnlyPacket_TimeoutCheckpointAfterCompareTimeout_NotEarlier()
    {
        var h = new Harness();
        h.Svm(Out(1000, 5000, ACK, B("abc")));
        h.Time.Advance(TimeSpan.FromMilliseconds(999));
        h.Engine.OnTick();
        Assert.Empty(h.Sink.Requests);
        h.Time.Advance(TimeSpan.FromMilliseconds(2));
        h.Engine.OnTick();
        Assert.Equal(new[] { CheckpointReason.Timeout }, h.Sink.Requests);
        h.Time.Advance(TimeSpan.FromSeconds(5));
        h.Engine.OnTick();
        Assert.Single(h.Sink.Requests); // once per epoch
    }

    [Fact]
    public void SvmOnlyUdp_TimeoutCheckpoint()
    {
        var h = new Harness();
        h.Svm(Udp(GuestIp, 53, ClientIp, 3333, B("x")));
        h.Time.Advance(TimeSpan.FromMilliseconds(500));
        h.Engine.OnTick();
        Assert.Empty(h.Sink.Requests);
        h.Time.Advance(TimeSpan.FromMilliseconds(600));
        h.Engine.OnTick();
        Assert.Equal(new[] { CheckpointReason.Timeout }, h.Sink.Requests);
    }

    [Fact]
    public void PvmPacketSvmNeverSends_TimeoutCheckpoint_ThenCommitReleases()
    {
        var h = new Harness();
        byte[] p = Out(1000, 5000, ACK, B("abc"));
        h.Pvm(p);
        h.Time.Advance(TimeSpan.FromMilliseconds(900));
        h.Engine.OnTick();
        Assert.Empty(h.Sink.Requests);
        h.Time.Advance(TimeSpan.FromMilliseconds(200));
        h.Engine.OnTick();
        Assert.Equal(new[] { CheckpointReason.Timeout }, h.Sink.Requests);
        Assert.Empty(h.Sink.Released);
        h.Engine.OnCheckpointCommitted();
        Assert.Equal(new[] { p }, h.Sink.Released);
        // Re-armed: a new timeout in the next epoch is reported again.
        h.Pvm(Out(1003, 5000, ACK, B("d")));
        h.Time.Advance(TimeSpan.FromMilliseconds(1100));
        h.Engine.OnTick();
        Assert.Equal(2, h.Sink.Requests.Count);
    }

    [Fact]
    public void CheckpointCommitted_ReleasesAllInArrivalOrder_NextDataComparesFromNewBase()
    {
        var h = new Harness();
        byte[] a = Out(1000, 5000, ACK, B("aaa"));
        byte[] arp = ArpReply(GuestIp, ClientIp);
        byte[] b = Out(1003, 5000, ACK, B("bbb"));
        byte[] other = Out(7000, 9000, ACK, B("zz"), port: 41000);
        h.Pvm(a);
        h.Pvm(arp);
        h.Pvm(b);
        h.Pvm(other);
        h.Svm(Out(1000, 5000, ACK, B("aXa"))); // mismatch
        Assert.Contains(CheckpointReason.Mismatch, h.Sink.Requests);
        Assert.Empty(h.Sink.Released);

        h.Engine.OnCheckpointCommitted();
        Assert.Equal(new[] { a, arp, b, other }, h.Sink.Released);
        Assert.Equal(0, h.Engine.Counters.HeldFrames);
        Assert.Equal(0, h.Engine.Counters.HeldBytes);
        h.Sink.Released.Clear();
        h.Sink.Requests.Clear();

        // SVM (now loaded with the PVM state) retransmits old bytes below the new base: ignored.
        h.Svm(Out(1000, 5000, ACK, B("qqqqqq")));
        byte[] c = Out(1006, 5000, ACK, B("ccc"));
        h.Pvm(c);
        Assert.Empty(h.Sink.Released);
        h.Svm(Out(1006, 5000, ACK, B("ccc")));
        Assert.Equal(new[] { c }, h.Sink.Released);
        Assert.Empty(h.Sink.Requests);
    }

    [Fact]
    public void PipelinedCommit_ReleasesOnlyFramesBeforeMark_LaterFramesComparedAgainstLoadedSvm()
    {
        var h = new Harness();
        byte[] a = Out(1000, 5000, ACK, B("aaa"));
        byte[] u1 = Udp(GuestIp, 53, ClientIp, 3333, B("one"));
        h.Pvm(a);
        h.Pvm(u1);
        CheckpointMark mark = h.Engine.MarkCheckpoint();
        byte[] b = Out(1003, 5000, ACK, B("bbb"));
        byte[] u2 = Udp(GuestIp, 53, ClientIp, 3333, B("two"));
        h.Pvm(b);
        h.Pvm(u2);
        h.Svm(Out(1000, 5000, ACK, B("XXX"))); // old SVM diverged
        Assert.Contains(CheckpointReason.Mismatch, h.Sink.Requests);
        h.Time.Advance(TimeSpan.FromMilliseconds(900));
        h.Engine.OnCheckpointCommitted(mark);
        Assert.Equal(new[] { a, u1 }, h.Sink.Released);
        Assert.Equal(2, h.Engine.Counters.HeldFrames);

        // Held frames' timeout restarted at the commit.
        h.Time.Advance(TimeSpan.FromMilliseconds(500));
        h.Engine.OnTick();
        Assert.DoesNotContain(CheckpointReason.Timeout, h.Sink.Requests);

        // The loaded SVM (state at the mark) produces the post-mark output.
        h.Svm(Out(1003, 5000, ACK, B("bbb")));
        h.Svm(Udp(GuestIp, 53, ClientIp, 3333, B("two")));
        Assert.Equal(new[] { a, u1, b, u2 }, h.Sink.Released);
        Assert.Equal(0, h.Engine.Counters.HeldBytes);
        Assert.Throws<ArgumentException>(() => h.Engine.OnCheckpointCommitted(mark));
    }

    [Fact]
    public void PipelinedCommit_BytesReleasedAfterMark_NotComparedAgain()
    {
        var h = new Harness();
        h.Pvm(Out(1000, 5000, ACK, B("aaa")));
        CheckpointMark mark = h.Engine.MarkCheckpoint();
        h.Pvm(Out(1003, 5000, ACK, B("bbb")));
        h.Svm(Out(1000, 5000, ACK, B("aaabbb"))); // old SVM matches both
        Assert.Equal(2, h.Sink.Released.Count);
        h.Engine.OnCheckpointCommitted(mark);
        h.Svm(Out(1003, 5000, ACK, B("bbb"))); // loaded SVM re-sends what the client already has: ignored
        h.Time.Advance(TimeSpan.FromSeconds(2));
        h.Engine.OnTick();
        Assert.Empty(h.Sink.Requests);
        byte[] c = Out(1006, 5000, ACK, B("ccc"));
        h.Pvm(c);
        h.Svm(Out(1006, 5000, ACK, B("ccc")));
        Assert.Equal(c, h.Sink.Released[^1]);
        Assert.Empty(h.Sink.Requests);
    }

    [Fact]
    public void SvmAheadThenPvmDiffers_Mismatch()
    {
        var h = new Harness();
        h.Svm(Out(1000, 5000, ACK, B("abcdef")));
        h.Pvm(Out(1000, 5000, ACK, B("abc")));
        Assert.Single(h.Sink.Released);
        h.Pvm(Out(1003, 5000, ACK, B("dXf")));
        Assert.Equal(new[] { CheckpointReason.Mismatch }, h.Sink.Requests);
        Assert.Single(h.Sink.Released);
    }

    [Fact]
    public void SynAck_DifferentIsns_Matched_ThenDataComparesFromPvmIsnPlusOne()
    {
        var h = new Harness();
        const uint clientIsn = 4000;
        const uint pvmIsn = 0xFFFFFFFE; // wraps during the data
        byte[] synAck = Out(pvmIsn, clientIsn + 1, SYN | ACK, default, options: new byte[] { 2, 4, 5, 180 });
        h.Pvm(synAck);
        Assert.Empty(h.Sink.Released);
        h.Svm(Out(123456, clientIsn + 1, SYN | ACK, default, options: new byte[] { 2, 4, 5, 160, 4, 2 }));
        Assert.Equal(new[] { synAck }, h.Sink.Released);

        byte[] d = Out(pvmIsn + 1, clientIsn + 10, ACK | PSH, B("HTTP/1.1 200"));
        h.Pvm(d);
        h.Svm(Out(pvmIsn + 1, clientIsn + 10, ACK | PSH, B("HTTP/1.1 200"))); // already rewritten
        Assert.Equal(2, h.Sink.Released.Count);
        Assert.Empty(h.Sink.Requests);
    }

    [Fact]
    public void GuestInitiatedSyn_MatchedByFlags()
    {
        var h = new Harness();
        byte[] syn = Out(777, 0, SYN, default);
        h.Pvm(syn);
        h.Svm(Out(999999, 0, SYN, default));
        Assert.Equal(new[] { syn }, h.Sink.Released);
        byte[] ack = Out(778, 3001, ACK, default);
        h.Pvm(ack);
        h.Svm(Out(778, 3001, ACK, default));
        Assert.Equal(2, h.Sink.Released.Count);
    }

    [Fact]
    public void SynAck_FlagsDiffer_NotReleased()
    {
        var h = new Harness();
        h.Pvm(Out(100, 50, SYN | ACK, default));
        h.Svm(Out(900, 0, SYN, default));
        Assert.Empty(h.Sink.Released);
    }

    [Fact]
    public void Retransmissions_AlreadyReleasedBytes_ReleasedOnAck_NotAppendedTwice()
    {
        var h = new Harness();
        byte[] p = Out(1000, 5000, ACK, B("abc"));
        h.Pvm(p);
        h.Svm(Out(1000, 5000, ACK, B("abc")));
        Assert.Single(h.Sink.Released);
        h.Pvm(p); // PVM retransmits
        Assert.Equal(2, h.Sink.Released.Count);
        h.Svm(Out(1000, 5000, ACK, B("abc"))); // SVM retransmits
        h.Svm(Out(1001, 5000, ACK, B("bcd"))); // partial overlap: only "d" is new
        byte[] q = Out(1003, 5000, ACK, B("d"));
        h.Pvm(q);
        Assert.Equal(3, h.Sink.Released.Count);
        byte[] r = Out(1000, 5020, ACK, B("abcd")); // retransmission carrying a newer ack
        h.Pvm(r);
        Assert.Equal(3, h.Sink.Released.Count);
        h.Svm(Out(1004, 5020, ACK, default));
        Assert.Equal(4, h.Sink.Released.Count);
        Assert.Empty(h.Sink.Requests);
    }

    [Fact]
    public void OutOfOrderSegments_BothSides_MatchWhenGapFills()
    {
        var h = new Harness();
        h.Svm(Out(1000, 5000, ACK, B("a"))); // sets the base
        h.Svm(Out(1006, 5000, ACK, B("ghij")));
        h.Svm(Out(1001, 5000, ACK, B("bcdef")));
        byte[] p1 = Out(1000, 5000, ACK, B("ab"));
        byte[] p3 = Out(1005, 5000, ACK, B("fghij"));
        byte[] p2 = Out(1002, 5000, ACK, B("cde"));
        h.Pvm(p1);
        h.Pvm(p3);
        Assert.Single(h.Sink.Released);
        h.Pvm(p2);
        Assert.Equal(new[] { p1, p3, p2 }, h.Sink.Released);
        Assert.Empty(h.Sink.Requests);
    }

    [Fact]
    public void Fin_MatchedAtSameSeq_Released_ConnectionClosed()
    {
        var h = new Harness();
        byte[] p = Out(1000, 5000, ACK | FIN, B("bye"));
        h.Pvm(p);
        h.Svm(Out(1000, 5000, ACK, B("bye")));
        Assert.Empty(h.Sink.Released);
        h.Svm(Out(1003, 5000, ACK | FIN, default));
        Assert.Equal(new[] { p }, h.Sink.Released);
        Assert.Empty(h.Sink.Requests);
        h.Time.Advance(TimeSpan.FromSeconds(11));
        h.Engine.OnTick();
        Assert.Equal(0, h.Engine.ConnectionCount);
    }

    [Fact]
    public void Fin_AtDifferentSeq_Mismatch()
    {
        var h = new Harness();
        h.Pvm(Out(1000, 5000, ACK | FIN, B("bye")));
        h.Svm(Out(1000, 5000, ACK, B("bye!")));
        Assert.Contains(CheckpointReason.Mismatch, h.Sink.Requests);
        Assert.Empty(h.Sink.Released);
    }

    [Fact]
    public void Rst_ReleasedWhenSvmAlsoResets_ElseTimeout()
    {
        var h = new Harness();
        byte[] rst = Out(1000, 5000, RST | ACK, default);
        h.Pvm(rst);
        h.Time.Advance(TimeSpan.FromMilliseconds(1001));
        h.Engine.OnTick();
        Assert.Equal(new[] { CheckpointReason.Timeout }, h.Sink.Requests);
        h.Svm(Out(1000, 4000, RST | ACK, default));
        Assert.Equal(new[] { rst }, h.Sink.Released);
    }

    [Fact]
    public void Arp_Identical_Released()
    {
        var h = new Harness();
        byte[] pvm = ArpReply(GuestIp, ClientIp, padded: true);
        byte[] svm = ArpReply(GuestIp, ClientIp, padded: false); // padding differs; ARP payload equal
        h.Svm(svm);
        h.Pvm(pvm);
        Assert.Equal(new[] { pvm }, h.Sink.Released);
        Assert.Empty(h.Sink.Requests);
    }

    [Fact]
    public void IcmpEchoReplies_Identical_DifferentIpIdAndTtl_Released()
    {
        var h = new Harness();
        byte[] pvm = IcmpEchoReply(7, 1, B("pingdata"), ipId: 100, ttl: 64);
        h.Pvm(pvm);
        Assert.Empty(h.Sink.Released);
        h.Svm(IcmpEchoReply(7, 1, B("pingdata"), ipId: 200, ttl: 63));
        Assert.Equal(new[] { pvm }, h.Sink.Released);
        Assert.Empty(h.Sink.Requests);
    }

    [Fact]
    public void Udp_DifferingPayload_Mismatch()
    {
        var h = new Harness();
        h.Pvm(Udp(GuestIp, 53, ClientIp, 3333, B("hello")));
        h.Svm(Udp(GuestIp, 53, ClientIp, 3333, B("hellp")));
        Assert.Equal(new[] { CheckpointReason.Mismatch }, h.Sink.Requests);
        Assert.Empty(h.Sink.Released);
    }

    [Fact]
    public void Udp_PairwiseFifo_Released()
    {
        var h = new Harness();
        byte[] p1 = Udp(GuestIp, 53, ClientIp, 3333, B("one"), ipId: 1);
        byte[] p2 = Udp(GuestIp, 53, ClientIp, 3333, B("two"), ipId: 2);
        h.Pvm(p1);
        h.Pvm(p2);
        h.Svm(Udp(GuestIp, 53, ClientIp, 3333, B("one"), ipId: 9));
        Assert.Equal(new[] { p1 }, h.Sink.Released);
        h.Svm(Udp(GuestIp, 53, ClientIp, 3333, B("two"), ipId: 10));
        Assert.Equal(new[] { p1, p2 }, h.Sink.Released);
        Assert.Equal(0, h.Engine.Counters.Flows);
    }

    [Fact]
    public void BadFrames_CountedByKind_NoException_PvmHeldByteExact()
    {
        var h = new Harness();
        byte[] truncated = new byte[10];
        byte[] ihlPast = Out(1, 1, ACK, default);
        ihlPast[14] = 0x4F; // IHL 60 bytes > frame
        byte[] doffPast = Out(1, 1, ACK, default);
        doffPast[14 + 20 + 12] = 0xF0; // 60-byte TCP header in a 20-byte segment
        byte[] totalLen = Out(1, 1, ACK, B("x"));
        totalLen[16] = 0x10; // total length 4096+

        foreach (byte[] f in new[] { truncated, ihlPast, doffPast, totalLen })
        {
            h.Pvm(f);
            h.Svm(f.AsSpan(0, Math.Max(1, f.Length - 1)).ToArray());
        }
        CompareCounters c = h.Engine.Counters;
        Assert.Equal(4, c.PvmBadFrames);
        Assert.Equal(4, c.SvmBadFrames);
        Assert.Equal(2, c.GetBadFrames(BadFrameKind.TruncatedEthernet));
        Assert.Equal(2, c.GetBadFrames(BadFrameKind.IpHeaderLength));
        Assert.Equal(1, c.GetBadFrames(BadFrameKind.TcpDataOffset));
        Assert.Equal(3, c.GetBadFrames(BadFrameKind.IpTotalLength));
        Assert.Equal(0, c.InternalErrors);
        Assert.Empty(h.Sink.Released);
        Assert.Equal(4, c.HeldFrames);
        // An identical malformed SVM frame releases the held PVM one (byte-exact, FIFO).
        h.Svm(truncated);
        Assert.Equal(new[] { truncated }, h.Sink.Released);
    }

    [Fact]
    public void HeldBytesOverLimit_QueueFullCheckpoint_KeepsHolding()
    {
        var h = new Harness(new CompareOptions { MaxHeldBytes = 1000 });
        for (uint i = 0; i < 20; i++)
        {
            h.Pvm(Out(1000 + i * 40, 5000, ACK, new byte[40]));
        }
        Assert.Equal(new[] { CheckpointReason.QueueFull }, h.Sink.Requests);
        Assert.Equal(20, h.Engine.Counters.HeldFrames);
        Assert.Empty(h.Sink.Released);
        h.Engine.OnCheckpointCommitted();
        Assert.Equal(20, h.Sink.Released.Count);
    }

    [Fact]
    public void ConnectionTable_Bounded_EvictsIdle()
    {
        var h = new Harness(new CompareOptions { MaxConnections = 4 });
        for (ushort port = 1; port <= 10; port++)
        {
            h.Pvm(Out(1, 1, ACK, default, port: port));
            h.Svm(Out(1, 1, ACK, default, port: port));
        }
        Assert.Equal(10, h.Sink.Released.Count);
        Assert.True(h.Engine.ConnectionCount <= 4);
        Assert.Empty(h.Sink.Requests);
    }

    [Fact]
    public void ConnectionTable_FullOfHeldConnections_QueueFullRequested_NothingDropped()
    {
        var h = new Harness(new CompareOptions { MaxConnections = 3 });
        for (ushort port = 1; port <= 5; port++)
        {
            h.Pvm(Out(1, 1, ACK, B("x"), port: port));
        }
        Assert.Equal(new[] { CheckpointReason.QueueFull }, h.Sink.Requests);
        Assert.Equal(5, h.Engine.Counters.HeldFrames);
        h.Engine.OnCheckpointCommitted();
        Assert.Equal(5, h.Sink.Released.Count);
    }

    [Fact]
    public void PassThroughOff_ComparesAfresh()
    {
        var h = new Harness();
        h.Engine.PassThrough = true;
        h.Pvm(Out(1000, 5000, ACK, B("abc")));
        h.Engine.PassThrough = false;
        byte[] p = Out(1003, 5000, ACK, B("def"));
        h.Pvm(p);
        Assert.Single(h.Sink.Released);
        h.Svm(Out(1003, 5000, ACK, B("def")));
        Assert.Equal(p, h.Sink.Released[^1]);
        Assert.Empty(h.Sink.Requests);
    }

    [Fact]
    public void PassThrough_ReleasesHeldAndThenImmediately()
    {
        var h = new Harness();
        byte[] a = Out(1000, 5000, ACK, B("a"));
        byte[] u = Udp(GuestIp, 1, ClientIp, 2, B("u"));
        h.Pvm(a);
        h.Pvm(u);
        Assert.Empty(h.Sink.Released);
        h.Engine.PassThrough = true;
        Assert.Equal(new[] { a, u }, h.Sink.Released);
        byte[] b = Out(1001, 5000, ACK, B("b"));
        h.Pvm(b);
        Assert.Equal(3, h.Sink.Released.Count);
        h.Svm(Out(1, 1, ACK, B("junk")));
        h.Time.Advance(TimeSpan.FromSeconds(5));
        h.Engine.OnTick();
        Assert.Empty(h.Sink.Requests);
        Assert.Equal(0, h.Engine.Counters.HeldBytes);
    }

    [Fact]
    public void MidStreamConnection_BaseFromFirstSeenSeq_SvmBytesBelowIgnored()
    {
        var h = new Harness();
        byte[] p = Out(50000, 1, ACK, B("xyz"));
        h.Pvm(p);
        h.Svm(Out(49990, 1, ACK, B("0123456789"))); // below the base: ignored
        h.Svm(Out(50000, 1, ACK, B("xyz")));
        Assert.Equal(new[] { p }, h.Sink.Released);
        Assert.Empty(h.Sink.Requests);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    public void Property_RandomSegmentationsOfSameStream_AlwaysMatch(int seed)
    {
        var rnd = new Random(seed * 7919);
        var h = new Harness();
        int n = 30000;
        byte[] stream = new byte[n];
        rnd.NextBytes(stream);
        uint isn = seed % 2 == 0 ? 0xFFFFF000u : (uint)rnd.Next();
        List<byte[]> pvm = Segment(rnd, stream, isn, retransmit: true);
        List<byte[]> svm = Segment(rnd, stream, isn, retransmit: true);
        int i = 0, j = 0;
        while (i < pvm.Count || j < svm.Count)
        {
            bool takePvm = j >= svm.Count || (i < pvm.Count && rnd.Next(2) == 0);
            if (takePvm)
            {
                h.Pvm(pvm[i++]);
            }
            else
            {
                h.Svm(svm[j++]);
            }
        }
        Assert.Empty(h.Sink.Requests);
        Assert.Equal(pvm.Count, h.Sink.Released.Count);
        for (int k = 0; k < pvm.Count; k++)
        {
            Assert.Same(pvm[k], pvm[k]);
            Assert.Equal(pvm[k], h.Sink.Released[k]);
        }
        Assert.Equal(0, h.Engine.Counters.HeldFrames);
        Assert.Equal(0, h.Engine.Counters.HeldBytes);
    }

    private static List<byte[]> Segment(Random rnd, byte[] stream, uint isn, bool retransmit)
    {
        var list = new List<byte[]>();
        int pos = 0;
        while (pos < stream.Length)
        {
            int len = Math.Min(stream.Length - pos, 1 + rnd.Next(1460));
            list.Add(Out(isn + (uint)pos, 5000, ACK, stream.AsSpan(pos, len), ipId: (ushort)rnd.Next()));
            if (retransmit && rnd.Next(10) == 0)
            {
                int back = rnd.Next(pos + 1);
                int rl = Math.Min(stream.Length - back, 1 + rnd.Next(1460));
                list.Add(Out(isn + (uint)back, 5000, ACK, stream.AsSpan(back, rl)));
            }
            pos += len;
        }
        return list;
    }

    [Fact]
    public void HotPath_MatchedPackets_AllocationFree_AndThroughput()
    {
        var sink = new RecordingSink { Record = false };
        var engine = new CompareEngine(new CompareOptions(), sink, TimeProvider.System);
        byte[] pvm = Out(1, 5000, ACK, new byte[10]);
        byte[] svm = Out(1, 5000, ACK, new byte[10], ipId: 9);
        Assert.Equal(64, pvm.Length);
        uint seq = 1;
        void Run(int count)
        {
            for (int i = 0; i < count; i++)
            {
                System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(pvm.AsSpan(38), seq);
                System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(svm.AsSpan(38), seq);
                seq += 10;
                engine.OnPvmFrame(pvm);
                engine.OnSvmFrame(svm);
            }
        }
        // Warm up past tier-0 JIT (tier-up happens on a background thread after a quiet period).
        Run(50_000);
        Thread.Sleep(300);
        Run(50_000);
        Thread.Sleep(300);
        Run(20_000);
        long before = GC.GetAllocatedBytesForCurrentThread();
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        Run(100_000);
        TimeSpan elapsed = System.Diagnostics.Stopwatch.GetElapsedTime(t0);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        _out.WriteLine($"100k matched 64-byte TCP pairs: {allocated} bytes allocated, {100_000 / elapsed.TotalSeconds:F0} PVM packets/s ({200_000 / elapsed.TotalSeconds:F0} frames/s)");
        Assert.Equal(220_000, sink.Count);
        Assert.Empty(sink.Requests);
        Assert.True(allocated < 1024, $"allocated {allocated} bytes");
    }

    [Fact]
    public void Fuzz_RandomAndTruncatedFrames_NeverThrow()
    {
        var rnd = new Random(42);
        var h = new Harness();
        byte[] good = Out(1000, 5000, ACK, B("some payload"), options: new byte[] { 1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2 });
        for (int i = 0; i < 20000; i++)
        {
            byte[] f = good.AsSpan(0, rnd.Next(good.Length + 1)).ToArray();
            if (f.Length > 0)
            {
                f[rnd.Next(f.Length)] = (byte)rnd.Next(256);
            }
            h.Pvm(f);
            h.Svm(f);
            _ = PacketView.TryParse(f, out _, out _);
        }
        Assert.Equal(0, h.Engine.Counters.InternalErrors);
    }
}
