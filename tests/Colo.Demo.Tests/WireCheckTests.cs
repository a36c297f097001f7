namespace Colo.Demo.Tests;

public class WireCheckTests
{
    private const TcpSegmentFlags Syn = TcpSegmentFlags.Syn;
    private const TcpSegmentFlags Ack = TcpSegmentFlags.Ack;
    private const TcpSegmentFlags PshAck = TcpSegmentFlags.Psh | TcpSegmentFlags.Ack;
    private const TcpSegmentFlags FinAck = TcpSegmentFlags.Fin | TcpSegmentFlags.Ack;

    /// <summary>A connection between a client and a guest with the given initial sequence numbers; feeds a <see cref="WireCheck"/>.</summary>
    private sealed class Conversation
    {
        public readonly WireCheck Check = new();
        public uint ClientNext, GuestNext;
        public long Now = 1_764_000_000_000;

        public Conversation(uint clientIsn, uint guestIsn)
        {
            Check.OnClientSegment(clientIsn, 0, Syn, 0, Now);
            Check.OnGuestSegment(guestIsn, clientIsn + 1, Syn | Ack, 0, Now);
            ClientNext = clientIsn + 1;
            GuestNext = guestIsn + 1;
            Check.OnClientSegment(ClientNext, GuestNext, Ack, 0, Now);
        }

        /// <summary>One request/reply exchange: client sends <paramref name="request"/> bytes, guest replies with <paramref name="reply"/> bytes, client ACKs.</summary>
        public void Exchange(int request, int reply)
        {
            Now += 4;
            Check.OnClientSegment(ClientNext, GuestNext, PshAck, request, Now);
            ClientNext += (uint)request;
            Check.OnGuestSegment(GuestNext, ClientNext, PshAck, reply, Now);
            GuestNext += (uint)reply;
            Check.OnClientSegment(ClientNext, GuestNext, Ack, 0, Now);
        }
    }

    private static void AssertClean(WireCheck c)
    {
        Assert.Equal(0, c.Guest.SeqGaps);
        Assert.Equal(0, c.Client.SeqGaps);
        Assert.Equal(0, c.Guest.Rsts);
        Assert.Equal(0, c.Client.Rsts);
        Assert.Equal(0, c.Guest.AckBeyondSent);
        Assert.Equal(0, c.Client.AckBeyondSent);
        Assert.Empty(c.Anomalies);
    }

    [Fact]
    public void ContinuousStreamIsClean()
    {
        var conv = new Conversation(clientIsn: 1000, guestIsn: 5_000_000);
        for (int i = 0; i < 100; i++)
            conv.Exchange(request: 27, reply: 4 + i % 3);
        // Orderly close: client FIN, guest FIN, last ACK.
        conv.Check.OnClientSegment(conv.ClientNext, conv.GuestNext, FinAck, 0, conv.Now);
        conv.Check.OnGuestSegment(conv.GuestNext, conv.ClientNext + 1, FinAck, 0, conv.Now);
        conv.Check.OnClientSegment(conv.ClientNext + 1, conv.GuestNext + 1, Ack, 0, conv.Now);

        WireCheck c = conv.Check;
        AssertClean(c);
        Assert.True(c.HandshakeSeen);
        Assert.True(c.BothFinSeen);
        Assert.Equal(1 + 100 + 1, c.Guest.Segments); // SYN-ACK, replies, FIN
        Assert.Equal(2 + 200 + 2, c.Client.Segments);
        Assert.Equal(0, c.Guest.Retransmissions);
        Assert.Equal(0, c.Client.Retransmissions);
        Assert.Equal(1000u, c.ClientIsn);
    }

    [Fact]
    public void RetransmissionIsCountedNotFlagged()
    {
        var conv = new Conversation(clientIsn: 7, guestIsn: 9);
        conv.Exchange(27, 10);
        uint replyStart = conv.GuestNext - 10;
        conv.Check.OnGuestSegment(replyStart, conv.ClientNext, PshAck, 10, conv.Now);    // the same reply again
        conv.Check.OnGuestSegment(replyStart + 5, conv.ClientNext, PshAck, 5, conv.Now); // its tail
        conv.Check.OnGuestSegment(9, 8, Syn | Ack, 0, conv.Now);                         // a late SYN-ACK retransmission
        // A retransmission that overlaps the end and carries new bytes moves the end on.
        conv.Check.OnGuestSegment(conv.GuestNext - 4, conv.ClientNext, PshAck, 10, conv.Now);
        conv.GuestNext += 6;
        conv.Check.OnClientSegment(conv.ClientNext, conv.GuestNext, Ack, 0, conv.Now);
        conv.Exchange(27, 10);
        // The client retransmits its last request.
        conv.Check.OnClientSegment(conv.ClientNext - 27, conv.GuestNext, PshAck, 27, conv.Now);

        WireCheck c = conv.Check;
        AssertClean(c);
        Assert.Equal(4, c.Guest.Retransmissions);
        Assert.Equal(1, c.Client.Retransmissions);
    }

    [Fact]
    public void GapIsFlaggedOnceAndTheLateFillIsARetransmission()
    {
        var conv = new Conversation(clientIsn: 100, guestIsn: 200);
        conv.Exchange(27, 10);
        uint hole = conv.GuestNext;
        // 10 bytes never arrive; the next 10 do.
        conv.Check.OnGuestSegment(hole + 10, conv.ClientNext, PshAck, 10, conv.Now);
        conv.Check.OnGuestSegment(hole + 20, conv.ClientNext, PshAck, 10, conv.Now);
        conv.Check.OnGuestSegment(hole, conv.ClientNext, PshAck, 10, conv.Now); // the hole filled late

        WireCheck c = conv.Check;
        Assert.Equal(1, c.Guest.SeqGaps);
        Assert.Equal(1, c.Guest.Retransmissions);
        WireAnomaly a = Assert.Single(c.Anomalies);
        Assert.Equal("gap", a.Kind);
        Assert.Equal("guest", a.Direction);
        Assert.Equal(hole + 10, a.Seq);
        Assert.Equal(hole, a.Expected);
        Assert.Equal(10, a.Delta);
        Assert.Equal(10, a.Length);
        Assert.Equal(conv.Now, a.AtMs);
    }

    [Fact]
    public void GapsRecordWhetherTheHoleWasFilled()
    {
        var conv = new Conversation(clientIsn: 100, guestIsn: 200);
        conv.Exchange(27, 10);
        uint hole = conv.GuestNext;
        // The failover case: the 7-byte reply is lost, a dup ACK (seq after it) overtakes its retransmission.
        conv.Check.OnGuestSegment(hole + 7, conv.ClientNext, Ack, 0, 5000);
        Assert.Null(Assert.Single(conv.Check.Gaps).FilledAtMs);
        conv.Check.OnGuestSegment(hole, conv.ClientNext, PshAck, 7, 5005);
        WireGap gap = Assert.Single(conv.Check.Gaps);
        Assert.Equal("gap", gap.Kind);
        Assert.Equal("guest", gap.Direction);
        Assert.Equal(7, gap.Delta);
        Assert.Equal(5000, gap.AtMs);
        Assert.Equal(5005, gap.FilledAtMs);

        // A hole filled in two pieces is filled by the second; one never filled stays open.
        uint next = hole + 7;
        conv.Check.OnGuestSegment(next + 20, conv.ClientNext, PshAck, 5, 6000);
        conv.Check.OnGuestSegment(next, conv.ClientNext, PshAck, 12, 6001);
        Assert.Null(conv.Check.Gaps[1].FilledAtMs);
        conv.Check.OnGuestSegment(next + 12, conv.ClientNext, PshAck, 8, 6002);
        Assert.Equal(6002, conv.Check.Gaps[1].FilledAtMs);
        conv.Check.OnGuestSegment(next + 100, conv.ClientNext, PshAck, 5, 7000);
        conv.Check.OnGuestSegment(next + 25, conv.ClientNext, PshAck, 0, 7001); // an empty segment fills nothing
        Assert.Null(conv.Check.Gaps[2].FilledAtMs);
        Assert.Equal(3, conv.Check.Guest.SeqGaps);
    }

    [Fact]
    public void AnomaliesCarryTheSegmentsAroundThem()
    {
        var conv = new Conversation(clientIsn: 100, guestIsn: 200);
        for (int i = 0; i < 5; i++)
            conv.Exchange(27, 10);
        uint hole = conv.GuestNext;
        conv.Check.OnGuestSegment(hole + 7, conv.ClientNext, Ack, 0, conv.Now + 200);
        for (int i = 0; i < 10; i++)
            conv.Check.OnClientSegment(conv.ClientNext, hole, Ack, 0, conv.Now + 201 + i);
        List<string> context = Assert.Single(conv.Check.Anomalies).Context!;
        Assert.Equal(WireCheck.ContextSegments + 1 + WireCheck.ContextSegments, context.Count);
        string marked = context[WireCheck.ContextSegments];
        Assert.StartsWith($"+0ms guest seq={hole + 7} (+{hole + 7 - 200}) ack={conv.ClientNext} len=0 [Ack]", marked);
        Assert.EndsWith("<-- gap", marked);
        Assert.StartsWith("-200ms ", context[WireCheck.ContextSegments - 1]);
        Assert.StartsWith("+1ms client ", context[WireCheck.ContextSegments + 1]);
    }

    [Fact]
    public void JumpIntoAnotherSequenceSpaceIsFlagged()
    {
        // After a failover an un-rewritten SVM would continue at its own sequence numbers: a random offset.
        var forward = new Conversation(clientIsn: 1, guestIsn: 1_000_000);
        forward.Exchange(27, 10);
        uint leaked = forward.GuestNext + 0x1234_5678;
        for (int i = 0; i < 5; i++)
            forward.Check.OnGuestSegment(leaked + (uint)(i * 4), forward.ClientNext, PshAck, 4, forward.Now);
        Assert.Equal(1, forward.Check.Guest.SeqGaps); // one jump, then continuous in the new space
        Assert.Equal(0x1234_5678, Assert.Single(forward.Check.Anomalies).Delta);

        // An offset that lands "behind" (modulo 2^32) is not a retransmission: it is before the stream's start.
        var backward = new Conversation(clientIsn: 1, guestIsn: 1_000_000);
        backward.Exchange(27, 10);
        uint behind = backward.GuestNext - 0x4000_0000;
        backward.Check.OnGuestSegment(behind, backward.ClientNext, PshAck, 4, backward.Now);
        backward.Check.OnGuestSegment(behind + 4, backward.ClientNext, PshAck, 4, backward.Now);
        Assert.Equal(2, backward.Check.Guest.SeqGaps);
        Assert.Equal(0, backward.Check.Guest.Retransmissions);
        Assert.All(backward.Check.Anomalies, a => Assert.Equal("jump_before_start", a.Kind));
        Assert.Equal(-0x4000_0000L, backward.Check.Anomalies[0].Delta);
    }

    [Fact]
    public void RstIsFlaggedPerSide()
    {
        var conv = new Conversation(clientIsn: 50, guestIsn: 60);
        conv.Exchange(27, 10);
        conv.Check.OnClientSegment(conv.ClientNext, 0, TcpSegmentFlags.Rst, 0, conv.Now);
        Assert.Equal(1, conv.Check.Client.Rsts);
        Assert.Equal(0, conv.Check.Guest.Rsts);
        Assert.True(conv.Check.RstSeen);
        WireAnomaly a = Assert.Single(conv.Check.Anomalies);
        Assert.Equal("rst", a.Kind);
        Assert.Equal("client", a.Direction);

        // An RST's sequence number is not checked for continuity (0 here), so it adds no gap.
        conv.Check.OnGuestSegment(0, 0, TcpSegmentFlags.Rst, 0, conv.Now);
        Assert.Equal(1, conv.Check.Guest.Rsts);
        Assert.Equal(0, conv.Check.Guest.SeqGaps);
    }

    [Fact]
    public void AckBeyondWhatWasSentIsFlagged()
    {
        var conv = new Conversation(clientIsn: 10, guestIsn: 20);
        conv.Exchange(27, 10);
        conv.Check.OnClientSegment(conv.ClientNext, conv.GuestNext + 1, Ack, 0, conv.Now);
        conv.Check.OnGuestSegment(conv.GuestNext, conv.ClientNext + 100, Ack, 0, conv.Now);
        Assert.Equal(1, conv.Check.Client.AckBeyondSent);
        Assert.Equal(1, conv.Check.Guest.AckBeyondSent);
        Assert.Equal(["ack_beyond_sent", "ack_beyond_sent"], conv.Check.Anomalies.Select(a => a.Kind));
        Assert.Equal(1, conv.Check.Anomalies[0].Delta);
        Assert.Equal(100, conv.Check.Anomalies[1].Delta);
        // An ACK without the ACK flag (the SYN) is not checked.
        Assert.Equal(0, conv.Check.Guest.SeqGaps);
    }

    [Fact]
    public void SequenceWrapAt2Pow32IsContinuous()
    {
        var conv = new Conversation(clientIsn: 0xFFFF_FFE0, guestIsn: 0xFFFF_FFF0);
        for (int i = 0; i < 20; i++)
            conv.Exchange(request: 7, reply: 3); // both streams cross 0 within the first few exchanges
        Assert.True(conv.GuestNext < 0x100);
        Assert.True(conv.ClientNext < 0x100);
        // A retransmission reaching back across the wrap is still a retransmission (not a jump before the start).
        conv.Check.OnGuestSegment(0xFFFF_FFFE, conv.ClientNext, PshAck, 4, conv.Now);
        // So is the SYN-ACK, just below 2^32.
        conv.Check.OnGuestSegment(0xFFFF_FFF0, 0xFFFF_FFE1, Syn | Ack, 0, conv.Now);

        WireCheck c = conv.Check;
        AssertClean(c);
        Assert.Equal(2, c.Guest.Retransmissions);
        Assert.Equal(1 + 20 + 2, c.Guest.Segments);
    }

    [Fact]
    public void WithoutHandshakeTheFirstSegmentStartsTheStream()
    {
        var c = new WireCheck();
        c.OnGuestSegment(500, 900, PshAck, 10, 0);
        c.OnClientSegment(900, 510, Ack, 0, 0);
        c.OnGuestSegment(510, 900, PshAck, 10, 0);
        c.OnGuestSegment(500, 900, PshAck, 10, 0);
        Assert.False(c.HandshakeSeen);
        Assert.Null(c.ClientIsn);
        Assert.Equal(0, c.Guest.SeqGaps);
        Assert.Equal(1, c.Guest.Retransmissions);
        // Before the first captured byte: a jump.
        c.OnGuestSegment(499, 900, PshAck, 1, 0);
        Assert.Equal(1, c.Guest.SeqGaps);
    }

    [Fact]
    public void AnomalyRecordsAreBounded()
    {
        var c = new WireCheck(maxAnomalies: 2);
        c.OnGuestSegment(0, 0, TcpSegmentFlags.None, 1, 0);
        for (uint i = 1; i <= 5; i++)
            c.OnGuestSegment(i * 100, 0, TcpSegmentFlags.None, 1, 0);
        Assert.Equal(5, c.Guest.SeqGaps);
        Assert.Equal(2, c.Anomalies.Count);
        Assert.Equal(3, c.AnomaliesNotRecorded);
        Assert.Throws<ArgumentOutOfRangeException>(() => new WireCheck(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => c.OnGuestSegment(0, 0, TcpSegmentFlags.None, -1, 0));
    }

    [Fact]
    public void GuestSegmentsAreBucketedPerSecond()
    {
        var c = new WireCheck();
        c.OnGuestSegment(0, 0, TcpSegmentFlags.None, 1, 10_000);
        c.OnGuestSegment(1, 0, TcpSegmentFlags.None, 1, 10_999);
        c.OnGuestSegment(2, 0, TcpSegmentFlags.None, 1, 11_000);
        c.OnClientSegment(0, 0, TcpSegmentFlags.None, 1, 12_000); // client segments are not bucketed
        c.OnGuestSegment(3, 0, TcpSegmentFlags.None, 1, 13_500);
        Assert.Equal([(10L, 2L), (11L, 1L), (13L, 1L)], c.GuestSegmentsPerSecond.Select(s => (s.AtS, s.Segments)));
    }
}
