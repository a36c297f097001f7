using System.Buffers.Binary;
using System.Text.Json;

namespace Colo.Demo.Tests;

/// <summary>Builds Ethernet frames for the wire probe's tests.</summary>
internal static class Frames
{
    public const ulong GuestMac = 0x5254_00c0_1001;
    public const ulong ClientMac = 0x0a00_0000_0064;
    public const uint GuestIp = 0xC612_000A;  // 198.18.0.10
    public const uint ClientIp = 0xC612_0064; // 198.18.0.100

    public static byte[] Tcp(ulong srcMac, uint srcIp, ushort srcPort, uint dstIp, ushort dstPort, uint seq, uint ack, TcpSegmentFlags flags, int payload, int tcpOptions = 0)
    {
        int tcpLen = 20 + tcpOptions;
        byte[] f = new byte[14 + 20 + tcpLen + payload];
        Ethernet(f, srcMac, 0x0800);
        Ipv4(f.AsSpan(14), 6, srcIp, dstIp, 20 + tcpLen + payload);
        Span<byte> t = f.AsSpan(34);
        BinaryPrimitives.WriteUInt16BigEndian(t, srcPort);
        BinaryPrimitives.WriteUInt16BigEndian(t[2..], dstPort);
        BinaryPrimitives.WriteUInt32BigEndian(t[4..], seq);
        BinaryPrimitives.WriteUInt32BigEndian(t[8..], ack);
        t[12] = (byte)(tcpLen / 4 << 4);
        t[13] = (byte)flags;
        return f;
    }

    public static byte[] Echo(byte type, ulong srcMac, uint srcIp, uint dstIp, ushort id, ushort seq, ReadOnlySpan<byte> data)
    {
        byte[] f = new byte[14 + 20 + 8 + data.Length];
        Ethernet(f, srcMac, 0x0800);
        Ipv4(f.AsSpan(14), 1, srcIp, dstIp, 20 + 8 + data.Length);
        Span<byte> m = f.AsSpan(34);
        m[0] = type;
        BinaryPrimitives.WriteUInt16BigEndian(m[4..], id);
        BinaryPrimitives.WriteUInt16BigEndian(m[6..], seq);
        data.CopyTo(m[8..]);
        return f;
    }

    public static byte[] Arp(ulong ethSrc, ushort op, ulong senderMac, uint senderIp, ulong targetMac, uint targetIp)
    {
        byte[] f = new byte[60];
        Ethernet(f, ethSrc, 0x0806);
        Span<byte> a = f.AsSpan(14);
        BinaryPrimitives.WriteUInt16BigEndian(a, 1);
        BinaryPrimitives.WriteUInt16BigEndian(a[2..], 0x0800);
        a[4] = 6;
        a[5] = 4;
        BinaryPrimitives.WriteUInt16BigEndian(a[6..], op);
        WireFrame.WriteMac(a[8..], senderMac);
        BinaryPrimitives.WriteUInt32BigEndian(a[14..], senderIp);
        WireFrame.WriteMac(a[18..], targetMac);
        BinaryPrimitives.WriteUInt32BigEndian(a[24..], targetIp);
        return f;
    }

    private static void Ethernet(Span<byte> f, ulong srcMac, ushort type)
    {
        WireFrame.WriteMac(f, 0xFFFF_FFFF_FFFF);
        WireFrame.WriteMac(f[6..], srcMac);
        BinaryPrimitives.WriteUInt16BigEndian(f[12..], type);
    }

    private static void Ipv4(Span<byte> ip, byte protocol, uint src, uint dst, int total)
    {
        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)total);
        ip[8] = 64;
        ip[9] = protocol;
        BinaryPrimitives.WriteUInt32BigEndian(ip[12..], src);
        BinaryPrimitives.WriteUInt32BigEndian(ip[16..], dst);
    }
}

public class WireFrameTests
{
    [Fact]
    public void ParsesTcpWithOptionsAndPayloadLengthFromTheIpHeader()
    {
        byte[] f = Frames.Tcp(Frames.GuestMac, Frames.GuestIp, 6379, Frames.ClientIp, 40000, 0xFFFF_FFFF, 12345, TcpSegmentFlags.Psh | TcpSegmentFlags.Ack, payload: 9, tcpOptions: 12);
        Assert.True(WireFrame.TryParse(f, out WireFrame w));
        Assert.Equal(WireFrameKind.Tcp, w.Kind);
        Assert.Equal(Frames.GuestMac, w.SrcMac);
        Assert.Equal(Frames.GuestIp, w.SrcIp);
        Assert.Equal(Frames.ClientIp, w.DstIp);
        Assert.Equal(6379, w.SrcPort);
        Assert.Equal(40000, w.DstPort);
        Assert.Equal(0xFFFF_FFFFu, w.Seq);
        Assert.Equal(12345u, w.Ack);
        Assert.Equal(TcpSegmentFlags.Psh | TcpSegmentFlags.Ack, w.Flags);
        Assert.Equal(9, w.PayloadLength);

        // Captured bytes truncated after the TCP header: the payload length still comes from the IP total length.
        Assert.True(WireFrame.TryParse(f.AsSpan(0, 14 + 20 + 32), out w));
        Assert.Equal(9, w.PayloadLength);
        // Ethernet padding after the IP packet is not payload.
        byte[] padded = new byte[f.Length + 6];
        f.CopyTo(padded, 0);
        Assert.True(WireFrame.TryParse(padded, out w));
        Assert.Equal(9, w.PayloadLength);
    }

    [Fact]
    public void RejectsTruncatedOrInconsistentHeaders()
    {
        byte[] tcp = Frames.Tcp(Frames.GuestMac, Frames.GuestIp, 6379, Frames.ClientIp, 40000, 1, 2, TcpSegmentFlags.Ack, 0);
        for (int len = 0; len < 14 + 20 + 20; len++)
            Assert.False(WireFrame.TryParse(tcp.AsSpan(0, len), out _), $"length {len}");
        byte[] badOffset = (byte[])tcp.Clone();
        badOffset[14 + 20 + 12] = 0x40; // data offset 16 < 20
        Assert.False(WireFrame.TryParse(badOffset, out _));
        byte[] badTotal = (byte[])tcp.Clone();
        badTotal[14 + 3] = 30; // IP total 30 < IP + TCP headers
        Assert.False(WireFrame.TryParse(badTotal, out _));
        byte[] arp = Frames.Arp(Frames.GuestMac, 2, Frames.GuestMac, Frames.GuestIp, Frames.ClientMac, Frames.ClientIp);
        Assert.False(WireFrame.TryParse(arp.AsSpan(0, 14 + 27), out _));
    }

    [Fact]
    public void ParsesArpEchoVlanAndSkipsFragmentsAndOtherTypes()
    {
        byte[] arp = Frames.Arp(Frames.GuestMac, 2, Frames.GuestMac, Frames.GuestIp, Frames.ClientMac, Frames.ClientIp);
        Assert.True(WireFrame.TryParse(arp, out WireFrame a));
        Assert.Equal(WireFrameKind.Arp, a.Kind);
        Assert.Equal(2, a.ArpOp);
        Assert.Equal(Frames.GuestMac, a.ArpSenderMac);
        Assert.Equal(Frames.GuestIp, a.ArpSenderIp);
        Assert.Equal(Frames.ClientMac, a.ArpTargetMac);
        Assert.Equal(Frames.ClientIp, a.ArpTargetIp);

        byte[] echo = Frames.Echo(0, Frames.GuestMac, Frames.GuestIp, Frames.ClientIp, 0x1234, 7, [1, 2, 3]);
        Assert.True(WireFrame.TryParse(echo, out WireFrame e));
        Assert.Equal(WireFrameKind.IcmpEcho, e.Kind);
        Assert.Equal(0x1234, e.IcmpId);
        Assert.Equal(7, e.IcmpSeq);
        Assert.Equal(3, e.IcmpDataLength);
        Assert.Equal(14 + 20 + 8, e.IcmpDataOffset);

        // One 802.1Q tag.
        byte[] tagged = new byte[echo.Length + 4];
        echo.AsSpan(0, 12).CopyTo(tagged);
        BinaryPrimitives.WriteUInt16BigEndian(tagged.AsSpan(12), 0x8100);
        BinaryPrimitives.WriteUInt16BigEndian(tagged.AsSpan(14), 5);
        echo.AsSpan(12).CopyTo(tagged.AsSpan(16));
        Assert.True(WireFrame.TryParse(tagged, out e));
        Assert.Equal(WireFrameKind.IcmpEcho, e.Kind);
        Assert.Equal(14 + 4 + 20 + 8, e.IcmpDataOffset);

        byte[] fragment = (byte[])echo.Clone();
        fragment[14 + 6] = 0x20; // more fragments
        Assert.True(WireFrame.TryParse(fragment, out e));
        Assert.Equal(WireFrameKind.Other, e.Kind);
        byte[] unreachable = (byte[])echo.Clone();
        unreachable[34] = 3;
        Assert.True(WireFrame.TryParse(unreachable, out e));
        Assert.Equal(WireFrameKind.Other, e.Kind);
        byte[] ipv6 = (byte[])echo.Clone();
        BinaryPrimitives.WriteUInt16BigEndian(ipv6.AsSpan(12), 0x86DD);
        Assert.True(WireFrame.TryParse(ipv6, out e));
        Assert.Equal(WireFrameKind.Other, e.Kind);
    }

    [Fact]
    public void MacTextRoundTrips()
    {
        Assert.Equal(Frames.GuestMac, WireFrame.ParseMac("52:54:00:c0:10:01"));
        Assert.Equal(Frames.GuestMac, WireFrame.ParseMac("52-54-00-C0-10-01"));
        Assert.Equal("52:54:00:c0:10:01", WireFrame.FormatMac(Frames.GuestMac));
        Assert.Throws<FormatException>(() => WireFrame.ParseMac("52:54:00:c0:10"));
        Assert.Throws<FormatException>(() => WireFrame.ParseMac("52:54:00:c0:10:zz"));
    }
}

public class IcmpArpProbeTests
{
    private static IcmpArpProbe NewProbe(int maxRecords = 100) =>
        new(echoId: 0x4242, nonce: 0x0123_4567_89AB_CDEF, Frames.ClientIp, Frames.ClientMac, Frames.GuestIp, Frames.GuestMac, maxRecords);

    private static void Feed(IcmpArpProbe probe, byte[] frame, long atMs)
    {
        Assert.True(WireFrame.TryParse(frame, out WireFrame f));
        probe.OnFrame(f, frame, atMs);
    }

    /// <summary>The guest's echo reply to <paramref name="request"/> (the ICMP message the probe built).</summary>
    private static byte[] ReplyTo(byte[] request, ulong mac = Frames.GuestMac, int corruptAt = -1)
    {
        byte[] data = request.AsSpan(8, IcmpArpProbe.EchoDataLength).ToArray();
        if (corruptAt >= 0)
            data[corruptAt] ^= 0xFF;
        return Frames.Echo(0, mac, Frames.GuestIp, Frames.ClientIp, BinaryPrimitives.ReadUInt16BigEndian(request.AsSpan(4)), BinaryPrimitives.ReadUInt16BigEndian(request.AsSpan(6)), data);
    }

    [Fact]
    public void EchoRequestsAreValidAndRepliesMatched()
    {
        IcmpArpProbe probe = NewProbe();
        var requests = new List<byte[]>();
        for (int i = 0; i < 4; i++)
        {
            byte[] m = new byte[IcmpArpProbe.EchoMessageLength];
            Assert.True(probe.TryNextEchoRequest(m, 1000 + i * 250, out ushort seq));
            Assert.Equal(i, seq);
            Assert.Equal(8, m[0]);
            Assert.Equal(0x4242, BinaryPrimitives.ReadUInt16BigEndian(m.AsSpan(4)));
            Assert.Equal(0, IcmpArpProbe.InternetChecksum(m)); // a valid checksum sums to 0
            requests.Add(m);
        }
        Assert.NotEqual(requests[0].AsSpan(8).ToArray(), requests[1].AsSpan(8).ToArray()); // data depends on seq

        // The request leaving the client is counted; replies matched; one duplicate; one corrupted; one from another MAC.
        Feed(probe, Frames.Echo(8, Frames.ClientMac, Frames.ClientIp, Frames.GuestIp, 0x4242, 0, requests[0].AsSpan(8)), 1001);
        Feed(probe, ReplyTo(requests[0]), 1010);
        Feed(probe, ReplyTo(requests[0]), 1011);
        Feed(probe, ReplyTo(requests[1], corruptAt: 20), 1260);
        Feed(probe, ReplyTo(requests[2], mac: 0x0200_0000_0001), 1520);
        Feed(probe, Frames.Echo(0, Frames.GuestMac, Frames.GuestIp, Frames.ClientIp, 0x4242, 99, []), 1600); // never sent
        Feed(probe, Frames.Echo(0, Frames.GuestMac, Frames.GuestIp, Frames.ClientIp, 0x1111, 3, []), 1600);  // someone else's ping

        WireIcmpResult r = probe.IcmpResult();
        Assert.Equal(4, r.Sent);
        Assert.Equal(1, r.RequestsOnWire);
        Assert.Equal(1, r.DuplicateReplies);
        Assert.Equal(1, r.PayloadMismatches);
        Assert.Equal(1, r.WrongMac);
        Assert.Equal(1, r.UnmatchedReplies);
        Assert.Equal([1010L, 1260L, 1520L, null], r.Pings.Select(p => p.ReplyMs));
        Assert.Equal([true, false, true, true], r.Pings.Select(p => p.Ok));
        Assert.Equal(1, probe.UnansweredSince(1000));
        Assert.Equal(0, probe.UnansweredSince(1751));

        probe.EchoSendFailed(3);
        Assert.Equal(1, probe.IcmpResult().SendErrors);
        Assert.Equal(0, probe.UnansweredSince(1000));
    }

    [Fact]
    public void EchoRecordsAreBounded()
    {
        IcmpArpProbe probe = NewProbe(maxRecords: 2);
        byte[] m = new byte[IcmpArpProbe.EchoMessageLength];
        Assert.True(probe.TryNextEchoRequest(m, 0, out _));
        Assert.True(probe.TryNextEchoRequest(m, 0, out _));
        Assert.False(probe.TryNextEchoRequest(m, 0, out _));
        Assert.Equal(2, probe.IcmpResult().Sent);
    }

    [Fact]
    public void ArpRepliesGratuitousAndWrongMac()
    {
        IcmpArpProbe probe = NewProbe();
        byte[] request = new byte[IcmpArpProbe.ArpFrameLength];
        probe.BuildArpRequest(request);
        Assert.True(WireFrame.TryParse(request, out WireFrame req));
        Assert.Equal(WireFrameKind.Arp, req.Kind);
        Assert.Equal(0xFFFF_FFFF_FFFFul, req.DstMac);
        Assert.Equal(Frames.ClientMac, req.SrcMac);
        Assert.Equal(1, req.ArpOp);
        Assert.Equal(Frames.ClientIp, req.ArpSenderIp);
        Assert.Equal(Frames.GuestIp, req.ArpTargetIp);
        probe.ArpRequestSent(500, sent: true);
        probe.ArpRequestSent(600, sent: false);

        Feed(probe, request, 501); // the probe's own request, should the capture see it: not counted again
        Feed(probe, Frames.Arp(Frames.ClientMac, 1, Frames.ClientMac, Frames.ClientIp, 0, Frames.GuestIp), 700); // the kernel's
        Feed(probe, Frames.Arp(Frames.GuestMac, 2, Frames.GuestMac, Frames.GuestIp, Frames.ClientMac, Frames.ClientIp), 510);
        Feed(probe, Frames.Arp(Frames.GuestMac, 2, Frames.GuestMac, Frames.GuestIp, Frames.ClientMac, Frames.ClientIp), 710);
        Feed(probe, Frames.Arp(Frames.GuestMac, 1, Frames.GuestMac, Frames.GuestIp, 0, Frames.GuestIp), 800);   // gratuitous (failover)
        Feed(probe, Frames.Arp(0x0200_0000_0009, 2, 0x0200_0000_0009, Frames.GuestIp, Frames.ClientMac, Frames.ClientIp), 900); // impostor
        Feed(probe, Frames.Arp(0x0200_0000_0009, 2, Frames.GuestMac, Frames.GuestIp, Frames.ClientMac, Frames.ClientIp), 901);  // Ethernet source differs
        Feed(probe, Frames.Arp(Frames.GuestMac, 1, Frames.GuestMac, Frames.GuestIp, 0, Frames.ClientIp), 950);   // the guest asking for the client

        WireArpResult r = probe.ArpResult();
        Assert.Equal(1, r.ProbesSent);
        Assert.Equal(1, r.ProbeSendErrors);
        Assert.Equal(1, r.KernelRequests);
        Assert.Equal([500L, 700L], r.RequestMs);
        Assert.Equal(4, r.Replies);
        Assert.Equal([510L, 710L, 900L, 901L], r.ReplyMs);
        Assert.Equal(1, r.Gratuitous);
        Assert.Equal(2, r.WrongMac);
    }
}

public class DemoReportWireTests
{
    private const long Kill = 1_764_000_020_000;
    private const long Detected = Kill + 20;

    private static WireProbeResult Probe()
    {
        var probe = new WireProbeResult
        {
            Interface = "br0",
            CapturePackets = 50_000,
            Tcp =
            {
                Connections = 1,
                Connection = "198.18.0.100:40000 -> 198.18.0.10:6379",
                HandshakeSeen = true,
                Guest = { Segments = 9000, Retransmissions = 2 },
                Client = { Segments = 18000 },
                GuestSegmentsPerSecond = [new WireSecond { AtS = Kill / 1000 - 1, Segments = 500 }, new WireSecond { AtS = Kill / 1000 + 1, Segments = 400 }],
            },
            Icmp = { Sent = 6 },
            Arp = { ProbesSent = 3, KernelRequests = 1, Replies = 3, ReplyMs = [Kill - 5000, Kill - 10, Kill + 2000] },
        };
        long[] sent = [Kill - 5000, Kill - 500, Kill - 250, Kill + 100, Kill + 2000, Kill + 5000];
        long?[] reply = [Kill - 4999, Kill - 499, null, null, Kill + 2002, null];
        for (int i = 0; i < sent.Length; i++)
            probe.Icmp.Pings.Add(new PingRecord { Seq = i, SentMs = sent[i], ReplyMs = reply[i] });
        return probe;
    }

    private static DemoReport Report(WireProbeResult? probe, long killedAt = Kill, long detectedAt = Detected)
    {
        var r = new DemoReport
        {
            DurationS = 40,
            Redis = new DemoRedisSummary { Ops = 1000, Continuous = true },
            Http = new DemoHttpSummary { Requests = 100 },
            RedisBenchmark = new DemoBenchmarkSummary { RequestsPerS = 700 },
            Checkpoints = new DemoCheckpointSummary { Count = 10 },
            Failover = new DemoFailoverSummary { KilledAtS = killedAt > 0 ? 20 : -1, DetectedMs = killedAt > 0 ? detectedAt - killedAt : 0 },
        };
        r.ApplyWireProbe(probe, killedAt, detectedAt);
        r.UpdateOk();
        return r;
    }

    [Fact]
    public void SectionsAreComputedAroundTheFailover()
    {
        DemoReport r = Report(Probe());
        Assert.True(r.Ok, string.Join("; ", r.FailedRules()));
        DemoWireSummary w = r.Wire!;
        Assert.Equal(9000, w.Segments);
        Assert.Equal(2, w.Retransmissions);
        Assert.Equal(18000, w.ClientSegments);
        Assert.Equal(400, w.SegmentsAfterFailover);
        Assert.Null(w.Anomalies);

        DemoIcmpSummary i = r.Icmp!;
        Assert.Equal(6, i.Sent);
        Assert.Equal(3, i.Answered);
        Assert.Equal(3, i.Unanswered);
        Assert.Equal(2, i.UnansweredInFailoverWindow); // Kill-250 and Kill+100; Kill+5000 is after the window
        Assert.Equal(2, i.AnsweredBeforeFailover);
        Assert.Equal(1, i.AnsweredAfterFailover);
        Assert.Equal(1, i.RttMsP50);
        Assert.Equal(2, i.RttMsMax);

        DemoArpSummary a = r.Arp!;
        Assert.Equal(4, a.Requests);
        Assert.Equal(3, a.Replies);
        Assert.Equal(2, a.RepliesBeforeFailover);
        Assert.Equal(1, a.RepliesAfterFailover);

        string summary = r.ToHumanSummary();
        Assert.Contains("wire (INCR conn): 9000 guest segments (400 after the failover), 2 retransmissions, 0 seq gaps, 0 failover loss gaps (refilled), 0 client RSTs", summary);
        Assert.Contains("echo 3/6 answered (2 before, 1 after the failover; 3 unanswered, 2 of them in the failover window)", summary);
    }

    public static TheoryData<string> Breakers => new()
    {
        "seq_gaps", "client_rsts", "ack_beyond_sent", "guest_rsts", "guest_ack_beyond_sent", "no_handshake", "error",
        "payload", "icmp_mac", "no_echo_before", "no_echo_after", "arp_mac", "no_arp_before", "no_arp_after",
    };

    [Theory]
    [MemberData(nameof(Breakers))]
    public void EachWireRuleCanFail(string which)
    {
        WireProbeResult p = Probe();
        switch (which)
        {
            case "seq_gaps": p.Tcp.Guest.SeqGaps = 1; break;
            case "client_rsts": p.Tcp.Client.Rsts = 1; break;
            case "ack_beyond_sent": p.Tcp.Client.AckBeyondSent = 1; break;
            case "guest_rsts": p.Tcp.Guest.Rsts = 1; break;
            case "guest_ack_beyond_sent": p.Tcp.Guest.AckBeyondSent = 1; break;
            case "no_handshake": p.Tcp.HandshakeSeen = false; break;
            case "error": p.Error = "capture thread did not stop"; break;
            case "payload": p.Icmp.PayloadMismatches = 1; break;
            case "icmp_mac": p.Icmp.WrongMac = 1; break;
            case "no_echo_before": p.Icmp.Pings.RemoveAll(x => x.ReplyMs < Kill); break;
            case "no_echo_after": p.Icmp.Pings.RemoveAll(x => x.ReplyMs > Kill); break;
            case "arp_mac": p.Arp.WrongMac = 1; break;
            case "no_arp_before": p.Arp.ReplyMs.RemoveAll(t => t < Kill); break;
            case "no_arp_after": p.Arp.ReplyMs.RemoveAll(t => t > Kill); break;
        }
        DemoReport r = Report(p);
        Assert.False(r.Ok);
        Assert.Single(r.FailedRules());
        Assert.StartsWith("COLO demo: FAIL", r.ToHumanSummary());
    }

    [Theory]
    [InlineData(Kill + 200, Kill + 205L, 1, 0)]      // in the window, refilled: output lost with the primary, resent by the SVM
    [InlineData(Kill - 999, Kill - 900L, 1, 0)]      // just inside the window's start
    [InlineData(Detected + 3000, Detected + 3100L, 1, 0)] // just inside its end
    [InlineData(Kill + 200, null, 0, 1)]             // in the window, never filled: a jump
    [InlineData(Kill - 5000, Kill - 4990L, 0, 1)]    // refilled but long before the kill: the proxy lost output
    [InlineData(Detected + 3001, Detected + 3100L, 0, 1)]
    public void OnlyARefilledGapInTheFailoverWindowIsAFailoverLoss(long at, long? filledAt, int lossGaps, int seqGaps)
    {
        WireProbeResult p = Probe();
        p.Tcp.Guest.SeqGaps = 1;
        p.Tcp.Gaps.Add(new WireGap { AtMs = at, Kind = "gap", Direction = "guest", Delta = 7, FilledAtMs = filledAt });
        DemoReport r = Report(p);
        Assert.Equal(lossGaps, r.Wire!.FailoverLossGaps);
        Assert.Equal(seqGaps, r.Wire.SeqGaps);
        Assert.Equal(seqGaps == 0, r.Ok);
        Assert.Single(r.Wire.Gaps!);

        // Without a kill there is no failover window: every gap counts.
        DemoReport noKill = Report(p, killedAt: 0, detectedAt: 0);
        Assert.Equal(1, noKill.Wire!.SeqGaps);
        Assert.False(noKill.Ok);
    }

    [Fact]
    public void AJumpBeforeTheStartIsNeverAFailoverLoss()
    {
        WireProbeResult p = Probe();
        p.Tcp.Guest.SeqGaps = 2;
        p.Tcp.Gaps.Add(new WireGap { AtMs = Kill + 200, Kind = "jump_before_start", Direction = "guest", Delta = -0x4000_0000 });
        p.Tcp.Gaps.Add(new WireGap { AtMs = Kill + 300, Kind = "gap", Direction = "client", Delta = 7, FilledAtMs = Kill + 305 }); // not the guest's
        DemoReport r = Report(p);
        Assert.Equal(0, r.Wire!.FailoverLossGaps);
        Assert.Equal(2, r.Wire.SeqGaps);
        Assert.False(r.Ok);
    }

    [Fact]
    public void WithoutAKillEveryReplyCountsAsBefore()
    {
        WireProbeResult p = Probe();
        DemoReport r = Report(p, killedAt: 0, detectedAt: 0);
        Assert.True(r.Ok, string.Join("; ", r.FailedRules()));
        Assert.Equal(3, r.Icmp!.AnsweredBeforeFailover);
        Assert.Equal(0, r.Icmp.AnsweredAfterFailover);
        Assert.Equal(0, r.Icmp.UnansweredInFailoverWindow);
        Assert.Equal(3, r.Arp!.RepliesBeforeFailover);
        Assert.Equal(0, r.Wire!.SegmentsAfterFailover);
    }

    [Fact]
    public void NoProbeNoSectionsNoRules()
    {
        DemoReport r = Report(null);
        Assert.True(r.Ok);
        Assert.Null(r.Wire);
        Assert.Null(r.Icmp);
        Assert.Null(r.Arp);
        Assert.DoesNotContain("wire", r.ToJson());
    }

    [Fact]
    public void JsonHasTheWireSections()
    {
        WireProbeResult p = Probe();
        p.Tcp.Anomalies.Add(new WireAnomaly { AtMs = Kill, Kind = "gap", Direction = "guest", Seq = 10, Expected = 5, Delta = 5, Length = 4, Flags = "Ack" });
        p.Tcp.Gaps.Add(new WireGap { AtMs = Kill + 200, Kind = "gap", Direction = "guest", Delta = 7, FilledAtMs = Kill + 205 });
        DemoReport r = Report(p);
        using var doc = JsonDocument.Parse(r.ToJson());
        JsonElement root = doc.RootElement;
        Assert.Equal(["ok", "scenario", "duration_s", "redis", "http", "redis_benchmark", "checkpoints", "failover", "wire", "icmp", "arp"], root.EnumerateObject().Select(x => x.Name));
        Assert.Equal(
            ["segments", "retransmissions", "seq_gaps", "failover_loss_gaps", "client_rsts", "ack_beyond_sent", "guest_rsts", "guest_ack_beyond_sent", "client_segments",
             "client_retransmissions", "client_seq_gaps", "segments_after_failover", "connections", "handshake_seen", "connection", "capture_drops", "anomalies", "gaps", "other_tcp"],
            root.GetProperty("wire").EnumerateObject().Select(x => x.Name));
        Assert.Equal(
            ["sent", "answered", "payload_mismatches", "unanswered", "unanswered_in_failover_window", "answered_before_failover", "answered_after_failover",
             "send_errors", "duplicate_replies", "wrong_mac", "rtt_ms_p50", "rtt_ms_max"],
            root.GetProperty("icmp").EnumerateObject().Select(x => x.Name));
        Assert.Equal(["requests", "replies", "wrong_mac", "replies_before_failover", "replies_after_failover", "kernel_requests", "gratuitous"],
            root.GetProperty("arp").EnumerateObject().Select(x => x.Name));
        Assert.Equal("gap", root.GetProperty("wire").GetProperty("anomalies")[0].GetProperty("kind").GetString());
        Assert.Equal(r.ToJson(), DemoReport.FromJson(r.ToJson()).ToJson());

        // The client's result carries the probe as "wire" and round-trips.
        var client = new ClientWorkloadResult { Wire = p };
        ClientWorkloadResult back = ClientWorkloadResult.FromJson(client.ToJson());
        Assert.Equal(client.ToJson(), back.ToJson());
        Assert.Equal(6, back.Wire!.Icmp.Pings.Count);
    }

    [Fact]
    public void FromAppliesTheClientsProbe()
    {
        var client = new ClientWorkloadResult
        {
            Redis = { Ops = 500, Continuous = true },
            Http = { Requests = 40 },
            RedisBenchmark = { RequestsPerS = 900, Ran = true },
            Wire = Probe(),
        };
        DemoReport r = DemoReport.From(40, client, 5, [50, 60], killedAtS: 20, killedAtUnixMs: Kill, detectedAtUnixMs: Detected);
        Assert.True(r.Ok, string.Join("; ", r.FailedRules()));
        Assert.Equal(1, r.Icmp!.AnsweredAfterFailover);
        client.Wire.Tcp.Guest.SeqGaps = 2;
        DemoReport bad = DemoReport.From(40, client, 5, [50, 60], killedAtS: 20, killedAtUnixMs: Kill, detectedAtUnixMs: Detected);
        Assert.False(bad.Ok);
        Assert.Contains("wire.seq_gaps == 0 (was 2)", bad.FailedRules());
    }
}
