using System.Buffers.Binary;

namespace Colo.Demo.Tests;

/// <summary>
/// Review of the wire probe: <see cref="WireCheck"/> fed with hostile but healthy TCP (must stay clean) and with real
/// jumps (must be flagged), <see cref="WireFrame.TryParse"/> fed with truncated, tagged, optioned and random frames
/// (must never throw), and the report's failover-loss exemption.
/// </summary>
public class ReviewWireTests
{
    private const TcpSegmentFlags Syn = TcpSegmentFlags.Syn;
    private const TcpSegmentFlags Ack = TcpSegmentFlags.Ack;
    private const TcpSegmentFlags PshAck = TcpSegmentFlags.Psh | TcpSegmentFlags.Ack;
    private const long T0 = 1_764_000_000_000;

    /// <summary>Handshake, then the caller drives the streams.</summary>
    private static WireCheck Open(uint clientIsn, uint guestIsn, out uint clientNext, out uint guestNext)
    {
        var c = new WireCheck();
        c.OnClientSegment(clientIsn, 0, Syn, 0, T0);
        c.OnGuestSegment(guestIsn, clientIsn + 1, Syn | Ack, 0, T0);
        c.OnClientSegment(clientIsn + 1, guestIsn + 1, Ack, 0, T0);
        clientNext = clientIsn + 1;
        guestNext = guestIsn + 1;
        return c;
    }

    private static void AssertClean(WireCheck c)
    {
        Assert.Equal(0, c.Guest.SeqGaps);
        Assert.Equal(0, c.Client.SeqGaps);
        Assert.Equal(0, c.Guest.AckBeyondSent);
        Assert.Equal(0, c.Client.AckBeyondSent);
        Assert.Equal(0, c.Guest.Rsts + c.Client.Rsts);
        Assert.Empty(c.Anomalies);
    }

    // ------------------------------------------------------------------ healthy TCP that must not be flagged

    [Fact]
    public void HoleFilledOutOfOrder_IsFilled()
    {
        // Two reply segments lost at the failover; a later ACK overtakes them (the gap), then the SVM's TCP resends the
        // second one first (tail-loss probe) and the first one at its RTO. Every byte of the hole came back.
        WireCheck c = Open(100, 5000, out uint cn, out uint gn);
        c.OnGuestSegment(gn + 20, cn, Ack, 0, T0 + 10);           // hole [gn, gn + 20)
        c.OnGuestSegment(gn + 10, cn, PshAck, 10, T0 + 30);       // its second half
        c.OnGuestSegment(gn, cn, PshAck, 10, T0 + 230);           // its first half
        WireGap gap = Assert.Single(c.Gaps);
        Assert.Equal(T0 + 230, gap.FilledAtMs);
        Assert.Equal(1, c.Guest.SeqGaps);
        Assert.Equal(2, c.Guest.Retransmissions);
    }

    [Fact]
    public void HoleFilledInThreeOutOfOrderPieces_AndTwoHolesByOneSegment()
    {
        WireCheck c = Open(100, 5000, out uint cn, out uint gn);
        c.OnGuestSegment(gn + 30, cn, PshAck, 5, T0 + 1);        // hole A [gn, gn + 30)
        c.OnGuestSegment(gn + 20, cn, PshAck, 10, T0 + 2);
        c.OnGuestSegment(gn + 5, cn, PshAck, 10, T0 + 3);        // [gn + 5, gn + 15): [gn, 5) and [15, 20) still missing
        Assert.Null(c.Gaps[0].FilledAtMs);
        c.OnGuestSegment(gn + 15, cn, PshAck, 5, T0 + 4);
        Assert.Null(c.Gaps[0].FilledAtMs);
        c.OnGuestSegment(gn, cn, PshAck, 5, T0 + 5);
        Assert.Equal(T0 + 5, c.Gaps[0].FilledAtMs);

        uint next = gn + 35;
        c.OnGuestSegment(next + 10, cn, PshAck, 10, T0 + 6);     // hole B [next, next + 10)
        c.OnGuestSegment(next + 30, cn, PshAck, 10, T0 + 7);     // hole C [next + 20, next + 30)
        c.OnGuestSegment(next, cn, PshAck, 30, T0 + 8);          // one resegmented retransmission covers both
        Assert.Equal(T0 + 8, c.Gaps[1].FilledAtMs);
        Assert.Equal(T0 + 8, c.Gaps[2].FilledAtMs);
    }

    [Fact]
    public void KeepaliveAndZeroWindowProbes_AreRetransmissionsNotGaps()
    {
        WireCheck c = Open(1000, 9000, out uint cn, out uint gn);
        c.OnClientSegment(cn, gn, PshAck, 27, T0 + 1);
        cn += 27;
        c.OnGuestSegment(gn, cn, PshAck, 100, T0 + 2);
        gn += 100;
        c.OnClientSegment(cn, gn, Ack, 0, T0 + 3);
        // Keepalives: seq = next − 1, empty or with one garbage byte, both sides.
        c.OnClientSegment(cn - 1, gn, Ack, 0, T0 + 4);
        c.OnGuestSegment(gn - 1, cn, Ack, 1, T0 + 5);
        c.OnClientSegment(cn - 1, gn, Ack, 1, T0 + 6);
        // Guest with 50 bytes outstanding against a zero window: Linux probes with seq = snd_una − 1.
        c.OnGuestSegment(gn, cn, PshAck, 50, T0 + 7);
        uint sndUna = gn;
        gn += 50;
        c.OnGuestSegment(sndUna - 1, cn, Ack, 0, T0 + 8);
        // A window probe carrying the next byte, then the data retransmitted when the window opens.
        c.OnGuestSegment(gn, cn, PshAck, 1, T0 + 9);
        c.OnGuestSegment(sndUna, cn, PshAck, 51, T0 + 10);
        gn += 1;
        c.OnClientSegment(cn, gn, Ack, 0, T0 + 11);
        AssertClean(c);
        Assert.Equal(3, c.Guest.Retransmissions);
        Assert.Equal(2, c.Client.Retransmissions);
    }

    [Fact]
    public void DuplicateSynAndSynAck_AndLateDuplicates_AreClean()
    {
        var c = new WireCheck();
        c.OnClientSegment(77, 0, Syn, 0, T0);
        c.OnClientSegment(77, 0, Syn, 0, T0 + 1000);              // SYN retransmitted
        c.OnGuestSegment(500, 78, Syn | Ack, 0, T0 + 1001);
        c.OnGuestSegment(500, 78, Syn | Ack, 0, T0 + 2001);       // SYN-ACK retransmitted
        c.OnClientSegment(78, 501, Ack, 0, T0 + 2002);
        c.OnClientSegment(78, 501, PshAck, 10, T0 + 2003);
        c.OnGuestSegment(501, 88, PshAck, 4, T0 + 2004);
        c.OnClientSegment(77, 0, Syn, 0, T0 + 2005);              // a very late duplicate of the SYN
        c.OnGuestSegment(500, 78, Syn | Ack, 0, T0 + 2006);
        AssertClean(c);
        Assert.True(c.HandshakeSeen);
    }

    [Fact]
    public void WrapAt2Pow32_GapAcrossTheWrapIsFilled_AndAcksAcrossTheWrapAreNotBeyond()
    {
        WireCheck c = Open(0xFFFF_FFF0, 0xFFFF_FFF8, out uint cn, out uint gn);
        // Guest's next is 0xFFFF_FFF9; the hole [0xFFFF_FFF9, 0x0000_0009) spans the wrap.
        c.OnGuestSegment(gn + 16, cn, PshAck, 4, T0 + 1);
        c.OnGuestSegment(gn, cn, PshAck, 16, T0 + 2);
        Assert.Equal(T0 + 2, Assert.Single(c.Gaps).FilledAtMs);
        c.OnClientSegment(cn, gn + 20, Ack, 0, T0 + 3);           // acks 0x0000_000D: exactly what was sent
        Assert.Equal(0, c.Client.AckBeyondSent);
        c.OnClientSegment(cn, gn + 21, Ack, 0, T0 + 4);           // one more than sent
        Assert.Equal(1, c.Client.AckBeyondSent);
    }

    [Fact]
    public void DuplicateAcksWithSackAndReorderedAcks_AreClean()
    {
        WireCheck c = Open(1, 1, out uint cn, out uint gn);
        c.OnClientSegment(cn, gn, PshAck, 10, T0 + 1);
        cn += 10;
        for (int i = 0; i < 5; i++)
            c.OnGuestSegment(gn + (uint)(i * 100), cn, PshAck, 100, T0 + 2);
        // The client acks a lower number after a higher one (duplicate ACKs with SACK blocks only change options).
        c.OnClientSegment(cn, gn + 300, Ack, 0, T0 + 3);
        c.OnClientSegment(cn, gn + 100, Ack, 0, T0 + 4);
        c.OnClientSegment(cn, gn + 100, Ack, 0, T0 + 5);
        c.OnClientSegment(cn, gn + 500, Ack, 0, T0 + 6);
        AssertClean(c);
    }

    // ------------------------------------------------------------------ real jumps that must be flagged

    [Fact]
    public void JumpForwardAfterGap_ThenContinuousInNewSpace_StaysUnfilled()
    {
        WireCheck c = Open(1, 1_000_000, out uint cn, out uint gn);
        c.OnGuestSegment(gn, cn, PshAck, 8, T0 + 1);
        gn += 8;
        uint leaked = gn + 3000;
        for (int i = 0; i < 100; i++)
            c.OnGuestSegment(leaked + (uint)(i * 8), cn, PshAck, 8, T0 + 2 + i);
        Assert.Equal(1, c.Guest.SeqGaps);
        Assert.Null(Assert.Single(c.Gaps).FilledAtMs);
    }

    [Fact]
    public void TransientJumpCoveredOnlyByLaterProgress_IsNotAFailoverLoss()
    {
        // At the kill + 100 ms one segment leaves 8000 bytes ahead of the stream (e.g. an un-rewritten or mis-rewritten
        // SVM segment), then the stream goes on at its right sequence numbers, 8 bytes every 4 ms (an INCR reply loop).
        // Ordinary progress covers the "hole" 4 s later; no retransmission ever resent it.
        const long kill = T0 + 20_000, detected = kill + 20;
        WireCheck c = Open(1, 1_000_000, out uint cn, out uint gn);
        long now = T0;
        for (int i = 0; i < 100; i++, now += 4, gn += 8)
            c.OnGuestSegment(gn, cn, PshAck, 8, now);
        now = kill + 100;
        c.OnGuestSegment(gn + 8000, cn, PshAck, 8, now);
        for (int i = 0; i < 1001; i++, gn += 8)
            c.OnGuestSegment(gn, cn, PshAck, 8, now += 4);
        WireGap gap = Assert.Single(c.Gaps);
        Assert.NotNull(gap.FilledAtMs);

        var probe = new WireProbeResult
        {
            Tcp = { Connections = 1, HandshakeSeen = true, Guest = c.Guest, Client = c.Client, Gaps = [.. c.Gaps], Anomalies = [.. c.Anomalies] },
        };
        var r = new DemoReport();
        r.ApplyWireProbe(probe, kill, detected);
        // A refill that is just the stream moving on, seconds later, is no retransmission of output lost at the kill.
        Assert.Equal(0, r.Wire!.FailoverLossGaps);
        Assert.Equal(1, r.Wire.SeqGaps);
    }

    [Fact]
    public void RefilledWithinTheAcceptedGap_IsStillAFailoverLoss()
    {
        const long kill = T0 + 20_000, detected = kill + 20;
        var probe = new WireProbeResult { Tcp = { Connections = 1, HandshakeSeen = true, Guest = { Segments = 10, SeqGaps = 1 } } };
        probe.Tcp.Gaps.Add(new WireGap { AtMs = detected + 200, Kind = "gap", Direction = "guest", Delta = 8, FilledAtMs = detected + 200 + DemoReport.FailoverWindowAfterMs });
        var r = new DemoReport();
        r.ApplyWireProbe(probe, kill, detected);
        Assert.Equal(1, r.Wire!.FailoverLossGaps);
        Assert.Equal(0, r.Wire.SeqGaps);
    }

    // ------------------------------------------------------------------ WireFrame

    [Fact]
    public void EveryTruncationOfTaggedOptionedFrames_ParsesOrRejects_NeverThrows()
    {
        byte[] tcp = Frames.Tcp(Frames.GuestMac, Frames.GuestIp, 6379, Frames.ClientIp, 40000, 0x1234_5678, 0x9ABC_DEF0, PshAck, payload: 30, tcpOptions: 40);
        byte[] withIpOptions = IpOptions(tcp, 8);
        byte[] tagged = Tag(withIpOptions, 0x8100);
        int headers = 14 + 4 + 28 + 60;
        for (int len = 0; len <= tagged.Length; len++)
        {
            bool ok = WireFrame.TryParse(tagged.AsSpan(0, len), out WireFrame f);
            Assert.Equal(len >= headers, ok);
            if (ok)
            {
                Assert.Equal(WireFrameKind.Tcp, f.Kind);
                Assert.Equal(0x1234_5678u, f.Seq);
                Assert.Equal(0x9ABC_DEF0u, f.Ack);
                Assert.Equal(30, f.PayloadLength);
            }
        }
    }

    [Fact]
    public void QinQ_Ipv6AndNonEthernetArp_AreOther()
    {
        byte[] tcp = Frames.Tcp(Frames.GuestMac, Frames.GuestIp, 6379, Frames.ClientIp, 40000, 1, 2, PshAck, payload: 3);
        Assert.True(WireFrame.TryParse(Tag(Tag(tcp, 0x8100), 0x88A8), out WireFrame f));
        Assert.Equal(WireFrameKind.Other, f.Kind); // documented: one tag skipped
        byte[] v6 = new byte[14 + 40 + 20];
        BinaryPrimitives.WriteUInt16BigEndian(v6.AsSpan(12), 0x86DD);
        v6[14] = 0x60;
        v6[14 + 6] = 6;
        Assert.True(WireFrame.TryParse(v6, out f));
        Assert.Equal(WireFrameKind.Other, f.Kind);
        byte[] arp = Frames.Arp(Frames.GuestMac, 2, Frames.GuestMac, Frames.GuestIp, Frames.ClientMac, Frames.ClientIp);
        arp[14 + 1] = 6; // htype 6 (IEEE 802)
        Assert.True(WireFrame.TryParse(arp, out f));
        Assert.Equal(WireFrameKind.Other, f.Kind);
        // An IPv4 header whose version is not 4 is malformed.
        byte[] v5 = (byte[])tcp.Clone();
        v5[14] = 0x55;
        Assert.False(WireFrame.TryParse(v5, out _));
    }

    [Fact]
    public void RandomAndMutatedFrames_NeverThrow_ThroughParserCheckAndProbe()
    {
        var rng = new Random(12345);
        var probe = new IcmpArpProbe(0x4242, 7, Frames.ClientIp, Frames.ClientMac, Frames.GuestIp, Frames.GuestMac, maxRecords: 16);
        var check = new WireCheck();
        byte[][] seeds =
        [
            Frames.Tcp(Frames.GuestMac, Frames.GuestIp, 6379, Frames.ClientIp, 40000, 1, 2, PshAck, payload: 9, tcpOptions: 12),
            Frames.Echo(0, Frames.GuestMac, Frames.GuestIp, Frames.ClientIp, 0x4242, 3, new byte[56]),
            Frames.Arp(Frames.GuestMac, 2, Frames.GuestMac, Frames.GuestIp, Frames.ClientMac, Frames.ClientIp),
        ];
        for (int i = 0; i < 200_000; i++)
        {
            byte[] f;
            if (i % 4 == 0)
            {
                f = new byte[rng.Next(0, 200)];
                rng.NextBytes(f);
                if (f.Length >= 14)
                    BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), (ushort)(i % 3 == 0 ? 0x0800 : i % 3 == 1 ? 0x0806 : 0x8100));
            }
            else
            {
                byte[] s = seeds[i % seeds.Length];
                f = s.AsSpan(0, rng.Next(0, s.Length + 1)).ToArray();
                for (int k = rng.Next(1, 4); k > 0 && f.Length > 0; k--)
                    f[rng.Next(f.Length)] = (byte)rng.Next(256);
            }
            if (!WireFrame.TryParse(f, out WireFrame w))
                continue;
            Assert.True(w.PayloadLength >= 0 && w.IcmpDataLength >= 0);
            if (w.Kind == WireFrameKind.Tcp)
                check.OnGuestSegment(w.Seq, w.Ack, w.Flags, w.PayloadLength, T0 + i);
            else
                probe.OnFrame(w, f, T0 + i);
        }
    }

    /// <summary><paramref name="frame"/> with <paramref name="bytes"/> of IPv4 options (NOPs) inserted after the IPv4 header.</summary>
    private static byte[] IpOptions(byte[] frame, int bytes)
    {
        byte[] f = new byte[frame.Length + bytes];
        frame.AsSpan(0, 34).CopyTo(f);
        f.AsSpan(34, bytes).Fill(1);
        frame.AsSpan(34).CopyTo(f.AsSpan(34 + bytes));
        f[14] = (byte)(0x40 | (20 + bytes) / 4);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(16), (ushort)(BinaryPrimitives.ReadUInt16BigEndian(frame.AsSpan(16)) + bytes));
        return f;
    }

    /// <summary><paramref name="frame"/> with an 802.1Q / 802.1ad tag of type <paramref name="tpid"/> inserted after the MACs.</summary>
    private static byte[] Tag(byte[] frame, ushort tpid)
    {
        byte[] f = new byte[frame.Length + 4];
        frame.AsSpan(0, 12).CopyTo(f);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), tpid);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(14), 42);
        frame.AsSpan(12).CopyTo(f.AsSpan(16));
        return f;
    }
}
