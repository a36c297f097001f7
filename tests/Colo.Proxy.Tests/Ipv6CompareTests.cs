using System.Buffers.Binary;
using Xunit.Abstractions;
using static Colo.Proxy.Tests.Frames;

namespace Colo.Proxy.Tests;

/// <summary>IPv6 through the compare engine (issue 4, items 2 and 5): TCP streams, UDP, ICMPv6, fragments, bad frames.</summary>
public class Ipv6CompareTests
{
    private readonly ITestOutputHelper _out;

    public Ipv6CompareTests(ITestOutputHelper output) => _out = output;

    private static byte[] B(string s) => Bytes(s);

    [Fact]
    public void Tcp6_SplitDifferentlyOnEachSide_Matches_NoCheckpoint()
    {
        var h = new Harness();
        byte[] p1 = Out6(1000, 5000, ACK, B("abc"), hopLimit: 64, flowLabel: 0x11111);
        byte[] p2 = Out6(1003, 5000, ACK | PSH, B("defghij"), hopLimit: 64, flowLabel: 0x11111);
        h.Pvm(p1);
        h.Pvm(p2);
        Assert.Empty(h.Sink.Released);
        // The SVM differs in hop limit, flow label and traffic class (so also in the TCP checksum's surroundings).
        h.Svm(Out6(1000, 5000, ACK, B("abcde"), hopLimit: 63, flowLabel: 0x22222, trafficClass: 0x10));
        Assert.Equal(new[] { p1 }, h.Sink.Released);
        h.Svm(Out6(1005, 5000, ACK | PSH, B("fghij"), hopLimit: 63, flowLabel: 0x22222));
        Assert.Equal(new[] { p1, p2 }, h.Sink.Released);
        Assert.Empty(h.Sink.Requests);
        Assert.Equal(10, h.Engine.Counters.MatchedBytes);
        Assert.Equal(0, h.Engine.Counters.HeldFrames);
        Assert.Equal(0, h.Engine.Counters.HeldBytes);
    }

    [Fact]
    public void Tcp6_ByteDiffers_MismatchCheckpoint_LastCauseNamesIpv6Endpoints()
    {
        var h = new Harness();
        h.Pvm(Out6(1000, 5000, ACK, B("abcdefghij")));
        h.Svm(Out6(1000, 5000, ACK, B("abcdeXghij")));
        Assert.Empty(h.Sink.Released);
        Assert.Equal(new[] { CheckpointReason.Mismatch }, h.Sink.Requests);
        Assert.Contains("[2001:db8::2]:80-[2001:db8::1]:40000", h.Engine.LastCause);
        h.Engine.OnCheckpointCommitted();
        Assert.Single(h.Sink.Released);
    }

    [Fact]
    public void Tcp6_ExtensionHeaderChain_MatchedAsStream()
    {
        var h = new Harness();
        Ext[] chain = { new(HopByHop, 8), new(DestOpts, 16) };
        byte[] p = Out6(1000, 5000, ACK, B("chained"), ext: chain);
        h.Pvm(p);
        h.Svm(Out6(1000, 5000, ACK, B("chain"), ext: chain, hopLimit: 1));
        Assert.Empty(h.Sink.Released);
        h.Svm(Out6(1005, 5000, ACK, B("ed"), ext: chain));
        Assert.Equal(new[] { p }, h.Sink.Released);
        Assert.Empty(h.Sink.Requests);
    }

    [Fact]
    public void Tcp6_HandshakeDataFin_FullConnection()
    {
        var h = new Harness();
        byte[] synAck = Out6(0xFFFFFFF0, 4001, SYN | ACK, default);
        h.Pvm(synAck);
        h.Svm(Out6(12345, 4001, SYN | ACK, default));
        byte[] d = Out6(0xFFFFFFF1, 4010, ACK | PSH, new byte[40]); // wraps
        byte[] fin = Out6(unchecked(0xFFFFFFF1 + 40), 4010, ACK | FIN, default);
        h.Pvm(d);
        h.Pvm(fin);
        h.Svm(Out6(0xFFFFFFF1, 4010, ACK | PSH | FIN, new byte[40]));
        Assert.Equal(new[] { synAck, d, fin }, h.Sink.Released);
        Assert.Empty(h.Sink.Requests);
        h.Time.Advance(TimeSpan.FromSeconds(11));
        h.Engine.OnTick();
        Assert.Equal(0, h.Engine.ConnectionCount);
    }

    [Fact]
    public void Tcp6_AndTcp4_SamePortsAndMappedAddress_AreSeparateConnections()
    {
        var h = new Harness();
        UInt128 mappedGuest = PacketView.MapIPv4(GuestIp), mappedClient = PacketView.MapIPv4(ClientIp);
        byte[] v4 = Out(1000, 5000, ACK, B("four"));
        byte[] v6 = Tcp6(mappedGuest, GuestPort, mappedClient, ClientPort, 1000, 5000, ACK, B("six!"));
        h.Pvm(v4);
        h.Pvm(v6);
        Assert.Equal(2, h.Engine.ConnectionCount);
        h.Svm(Tcp6(mappedGuest, GuestPort, mappedClient, ClientPort, 1000, 5000, ACK, B("six!")));
        Assert.Equal(new[] { v6 }, h.Sink.Released);
        h.Svm(Out(1000, 5000, ACK, B("four")));
        Assert.Equal(new[] { v6, v4 }, h.Sink.Released);
        Assert.Empty(h.Sink.Requests);
    }

    [Fact]
    public void Tcp6_ManyConnections_KeyedByFull128BitAddresses()
    {
        // Addresses differing only in the upper or only in the lower 64 bits are different connections.
        var h = new Harness();
        var released = new List<byte[]>();
        for (int i = 0; i < 50; i++)
        {
            UInt128 peer = (i & 1) == 0 ? new UInt128(0x2001_0DB8_0000_0000 + (ulong)i, 1) : new UInt128(0x2001_0DB8_0000_0000, 1000 + (ulong)i);
            byte[] p = Tcp6(GuestIp6, GuestPort, peer, ClientPort, 1000, 1, ACK, B($"conn {i}"));
            h.Pvm(p);
            released.Add(p);
        }
        Assert.Equal(50, h.Engine.ConnectionCount);
        for (int i = 49; i >= 0; i--)
        {
            UInt128 peer = (i & 1) == 0 ? new UInt128(0x2001_0DB8_0000_0000 + (ulong)i, 1) : new UInt128(0x2001_0DB8_0000_0000, 1000 + (ulong)i);
            h.Svm(Tcp6(GuestIp6, GuestPort, peer, ClientPort, 1000, 1, ACK, B($"conn {i}"), hopLimit: 9));
        }
        released.Reverse();
        Assert.Equal(released, h.Sink.Released);
        Assert.Empty(h.Sink.Requests);
    }

    [Fact]
    public void Icmp6EchoReply_DifferentHopLimitFlowLabelTrafficClass_Released()
    {
        var h = new Harness();
        byte[] pvm = Icmp6EchoReply(7, 1, B("pingdata"), hopLimit: 64, flowLabel: 0x12345, trafficClass: 0);
        h.Pvm(pvm);
        Assert.Empty(h.Sink.Released);
        h.Svm(Icmp6EchoReply(7, 1, B("pingdata"), hopLimit: 63, flowLabel: 0xFEDCB, trafficClass: 0xB8));
        Assert.Equal(new[] { pvm }, h.Sink.Released);
        Assert.Empty(h.Sink.Requests);
        Assert.Equal(0, h.Engine.Counters.Flows);
    }

    [Theory]
    [InlineData(8, 1)]  // identifier
    [InlineData(1, 2)]  // sequence
    [InlineData(7, 1)]  // data (below)
    public void Icmp6EchoReply_IdSeqOrDataDiffer_Mismatch(ushort id, ushort seq)
    {
        var h = new Harness();
        h.Pvm(Icmp6EchoReply(7, 1, B("pingdata")));
        h.Svm(Icmp6EchoReply(id, seq, id == 7 ? B("pingdatA") : B("pingdata")));
        Assert.Equal(new[] { CheckpointReason.Mismatch }, h.Sink.Requests);
        Assert.Empty(h.Sink.Released);
    }

    [Fact]
    public void Icmp6_OnlyTheChecksumDiffers_Released()
    {
        var h = new Harness();
        byte[] pvm = Icmp6EchoReply(7, 1, B("x"));
        byte[] svm = Icmp6EchoReply(7, 1, B("x"));
        svm[54 + 2] ^= 0xFF; // e.g. a checksum left to offload
        h.Pvm(pvm);
        h.Svm(svm);
        Assert.Equal(new[] { pvm }, h.Sink.Released);
        Assert.Empty(h.Sink.Requests);
    }

    [Fact]
    public void NeighbourAdvertisement_Identical_Released()
    {
        var h = new Harness();
        byte[] na = NeighbourAdvertisement(GuestIp6);
        h.Svm(NeighbourAdvertisement(GuestIp6, flowLabel: 0x777));
        h.Pvm(na);
        Assert.Equal(new[] { na }, h.Sink.Released);
        Assert.Empty(h.Sink.Requests);
    }

    [Fact]
    public void NeighbourAdvertisement_DifferentTarget_MismatchCheckpoint()
    {
        var h = new Harness();
        byte[] na = NeighbourAdvertisement(GuestIp6);
        h.Pvm(na);
        h.Svm(NeighbourAdvertisement(GuestIp6 + 1));
        Assert.Empty(h.Sink.Released);
        Assert.Equal(new[] { CheckpointReason.Mismatch }, h.Sink.Requests);
        Assert.Equal(1, h.Engine.Counters.Mismatches);
        Assert.Contains("Icmp6", h.Engine.LastCause);
        Assert.Contains("[2001:db8::2]", h.Engine.LastCause);
        h.Engine.OnCheckpointCommitted();
        Assert.Equal(new[] { na }, h.Sink.Released);
    }

    [Fact]
    public void NeighbourAdvertisement_DifferentLinkLayerOption_Mismatch()
    {
        var h = new Harness();
        h.Pvm(NeighbourAdvertisement(GuestIp6));
        h.Svm(NeighbourAdvertisement(GuestIp6, linkLayer: new byte[] { 2, 0, 0, 0, 0, 1 }));
        Assert.Equal(new[] { CheckpointReason.Mismatch }, h.Sink.Requests);
    }

    [Fact]
    public void Udp6_SamePayloadReleased_DifferentPayloadMismatch_PerFlowFifo()
    {
        var h = new Harness();
        byte[] a = Udp6(GuestIp6, 53, ClientIp6, 3333, B("one"), hopLimit: 64);
        byte[] b = Udp6(GuestIp6, 53, ClientIp6, 4444, B("two"));
        h.Pvm(a);
        h.Pvm(b);
        h.Svm(Udp6(GuestIp6, 53, ClientIp6, 4444, B("two"), hopLimit: 1, flowLabel: 5));
        Assert.Equal(new[] { b }, h.Sink.Released);
        h.Svm(Udp6(GuestIp6, 53, ClientIp6, 3333, B("one")));
        Assert.Equal(new[] { b, a }, h.Sink.Released);
        Assert.Empty(h.Sink.Requests);

        h.Pvm(Udp6(GuestIp6, 53, ClientIp6, 3333, B("hello")));
        h.Svm(Udp6(GuestIp6, 53, ClientIp6, 3333, B("hellp")));
        Assert.Equal(new[] { CheckpointReason.Mismatch }, h.Sink.Requests);
        Assert.Equal(2, h.Sink.Released.Count);
    }

    [Fact]
    public void SvmOnlyUdp6_TimeoutCheckpoint_LastCauseNamesFlow()
    {
        var h = new Harness();
        h.Svm(Udp6(GuestIp6, 53, ClientIp6, 3333, B("x")));
        h.Time.Advance(TimeSpan.FromMilliseconds(999));
        h.Engine.OnTick();
        Assert.Empty(h.Sink.Requests);
        h.Time.Advance(TimeSpan.FromMilliseconds(2));
        h.Engine.OnTick();
        Assert.Equal(new[] { CheckpointReason.Timeout }, h.Sink.Requests);
        Assert.Equal("timeout: SVM-only output on Udp6 flow proto 17 ethertype 0x86dd [2001:db8::2]:53->[2001:db8::1]:3333", h.Engine.LastCause);
    }

    [Fact]
    public void Ipv6Fragments_PairedByOffset_IdentificationIgnored_ContentByteExact()
    {
        var h = new Harness();
        ushort first = 0 << 3 | 1, second = 2 << 3;
        byte[] p1 = Ip6(GuestIp6, ClientIp6, 17, new byte[16], new Ext[] { new(Fragment, 8, first, 1111) });
        byte[] p2 = Ip6(GuestIp6, ClientIp6, 17, B("tail"), new Ext[] { new(Fragment, 8, second, 1111) });
        h.Pvm(p1);
        h.Pvm(p2);
        // The SVM's fragments carry another identification and hop limit, and come in the other order.
        h.Svm(Ip6(GuestIp6, ClientIp6, 17, B("tail"), new Ext[] { new(Fragment, 8, second, 2222) }, hopLimit: 3));
        Assert.Equal(new[] { p2 }, h.Sink.Released);
        h.Svm(Ip6(GuestIp6, ClientIp6, 17, new byte[16], new Ext[] { new(Fragment, 8, first, 2222) }));
        Assert.Equal(new[] { p2, p1 }, h.Sink.Released);
        Assert.Empty(h.Sink.Requests);

        h.Pvm(Ip6(GuestIp6, ClientIp6, 17, B("tail"), new Ext[] { new(Fragment, 8, second, 3333) }));
        h.Svm(Ip6(GuestIp6, ClientIp6, 17, B("tall"), new Ext[] { new(Fragment, 8, second, 3333) }));
        Assert.Equal(new[] { CheckpointReason.Mismatch }, h.Sink.Requests);
    }

    [Fact]
    public void Ipv6UnknownNextHeader_ComparedByteExactOverPayload()
    {
        var h = new Harness();
        byte[] p = Ip6(GuestIp6, ClientIp6, Esp, B("opaque esp"), hopLimit: 64);
        h.Pvm(p);
        h.Svm(Ip6(GuestIp6, ClientIp6, Esp, B("opaque esp"), hopLimit: 60, flowLabel: 9));
        Assert.Equal(new[] { p }, h.Sink.Released);
        h.Pvm(Ip6(GuestIp6, ClientIp6, Esp, B("opaque esp")));
        h.Svm(Ip6(GuestIp6, ClientIp6, Esp, B("opaque esP")));
        Assert.Equal(new[] { CheckpointReason.Mismatch }, h.Sink.Requests);
    }

    [Fact]
    public void BadIpv6Frames_CountedByKind_NoException_EngineKeepsRunning()
    {
        var h = new Harness();
        string[] names =
        {
            "header cut at 39 bytes", "payload length past the frame", "extension header length past the payload",
            "payload ends inside an extension header", "nine extension headers",
        };
        foreach (string name in names)
        {
            byte[] f = Ipv6PacketViewTests.BadIpv6Frame(name);
            h.Pvm(f);
            byte[] other = (byte[])f.Clone();
            other[^1] ^= 1; // malformed the same way, but not byte-identical: dropped, counted
            h.Svm(other);
        }
        CompareCounters c = h.Engine.Counters;
        Assert.Equal(5, c.PvmBadFrames);
        Assert.Equal(5, c.SvmBadFrames);
        Assert.Equal(5, c.SvmDropped);
        Assert.Equal(2, c.GetBadFrames(BadFrameKind.TruncatedIpv6));
        Assert.Equal(2, c.GetBadFrames(BadFrameKind.Ipv6PayloadLength));
        Assert.Equal(4, c.GetBadFrames(BadFrameKind.Ipv6ExtensionHeader));
        Assert.Equal(2, c.GetBadFrames(BadFrameKind.TooManyExtensionHeaders));
        Assert.Equal(2L, c.BadFramesByKind["TooManyExtensionHeaders"]);
        Assert.Equal(0, c.InternalErrors);
        Assert.Equal(5, c.HeldFrames);
        Assert.Empty(h.Sink.Released);

        // Still comparing: good IPv6 traffic matches, and a byte-identical malformed SVM frame releases the oldest one.
        byte[] good = Out6(1, 1, ACK, B("ok"));
        h.Pvm(good);
        h.Svm(Out6(1, 1, ACK, B("ok")));
        Assert.Equal(new[] { good }, h.Sink.Released);
        h.Svm(Ipv6PacketViewTests.BadIpv6Frame(names[0]));
        Assert.Equal(2, h.Sink.Released.Count);
        h.Engine.OnCheckpointCommitted();
        Assert.Equal(6, h.Sink.Released.Count);
        Assert.Equal(0, c.HeldBytes);
    }

    [Fact]
    public void HotPath_Ipv6MatchedPackets_AllocationFree()
    {
        var sink = new RecordingSink { Record = false };
        var engine = new CompareEngine(new CompareOptions(), sink, TimeProvider.System);
        byte[] pvm = Out6(1, 5000, ACK, new byte[10]);
        byte[] svm = Out6(1, 5000, ACK, new byte[10], hopLimit: 63, flowLabel: 7);
        byte[] pvmUdp = Udp6(GuestIp6, 53, ClientIp6, 3333, new byte[10]);
        byte[] svmUdp = Udp6(GuestIp6, 53, ClientIp6, 3333, new byte[10], hopLimit: 60);
        byte[] pvmNa = NeighbourAdvertisement(GuestIp6);
        byte[] svmNa = NeighbourAdvertisement(GuestIp6, flowLabel: 3);
        Assert.Equal(84, pvm.Length);
        uint seq = 1;
        void Run(int count)
        {
            for (int i = 0; i < count; i++)
            {
                BinaryPrimitives.WriteUInt32BigEndian(pvm.AsSpan(58), seq);
                BinaryPrimitives.WriteUInt32BigEndian(svm.AsSpan(58), seq);
                seq += 10;
                engine.OnPvmFrame(pvm);
                engine.OnSvmFrame(svm);
                if ((i & 15) == 0)
                {
                    engine.OnPvmFrame(pvmUdp);
                    engine.OnSvmFrame(svmUdp);
                    engine.OnSvmFrame(svmNa);
                    engine.OnPvmFrame(pvmNa);
                }
            }
        }
        Run(50_000);
        Thread.Sleep(300);
        Run(50_000);
        Thread.Sleep(300);
        Run(20_000);
        long released = sink.Count;
        long before = GC.GetAllocatedBytesForCurrentThread();
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        Run(100_000);
        TimeSpan elapsed = System.Diagnostics.Stopwatch.GetElapsedTime(t0);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        _out.WriteLine($"100k matched 84-byte IPv6 TCP pairs (+ UDP/ND every 16th): {allocated} bytes allocated, {100_000 / elapsed.TotalSeconds:F0} PVM TCP packets/s");
        Assert.Equal(100_000 + 2 * 6250, sink.Count - released);
        Assert.Empty(sink.Requests);
        Assert.Equal(0, engine.Counters.HeldFrames);
        Assert.True(allocated < 1024, $"allocated {allocated} bytes");
    }

    [Fact]
    public void Fuzz_RandomMutationsOfIpv6Frames_ParserAndEngineNeverThrow()
    {
        var rnd = new Random(4242);
        var h = new Harness(new CompareOptions { MaxHeldBytes = 1 << 20, MaxConnections = 256 });
        byte[][] seeds =
        {
            Out6(1000, 5000, ACK | PSH, B("some payload"), options: new byte[] { 1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2 }),
            Out6(1000, 5000, ACK, B("chained"), ext: new Ext[] { new(HopByHop, 8), new(Routing, 24), new(DestOpts, 16) }),
            Out6(7, 0, SYN, default, ext: new Ext[] { new(Ah, 24), new(Fragment, 8, 0, 5) }),
            Ip6(GuestIp6, ClientIp6, 6, new byte[24], new Ext[] { new(Fragment, 8, 3 << 3 | 1, 99) }),
            Udp6(GuestIp6, 53, ClientIp6, 3333, B("udp payload"), ext: new Ext[] { new(DestOpts, 8) }),
            Icmp6EchoReply(1, 2, B("echo")),
            NeighbourAdvertisement(GuestIp6),
            WithVlanTags(Out6(1, 2, ACK, B("tagged")), (0x88A8, 10), (0x8100, 20)),
            WithVlanTags(Out(1, 2, ACK, B("tagged v4")), (0x8100, 1), (0x88A8, 2), (0x8100, 3), (0x8100, 4)),
        };
        int parsed = 0;
        for (int i = 0; i < 20_000; i++)
        {
            byte[] seed = seeds[rnd.Next(seeds.Length)];
            // A third cut short, a sixth with Ethernet padding, the rest whole; then a few bytes flipped or replaced.
            int length = rnd.Next(6) switch
            {
                0 or 1 => rnd.Next(seed.Length + 1),
                2 => seed.Length + rnd.Next(1, 40),
                _ => seed.Length,
            };
            byte[] f = new byte[length];
            seed.AsSpan(0, Math.Min(length, seed.Length)).CopyTo(f);
            int mutations = rnd.Next(1, 5);
            for (int m = 0; m < mutations && f.Length > 0; m++)
            {
                int at = rnd.Next(3) switch
                {
                    0 => rnd.Next(Math.Min(f.Length, 120)), // headers, where the lengths and next headers are
                    1 => Math.Min(f.Length - 1, 12 + rnd.Next(12)), // ethertype / VLAN tags
                    _ => rnd.Next(f.Length),
                };
                f[at] = rnd.Next(4) == 0 ? (byte)rnd.Next(256) : (byte)(f[at] ^ (1 << rnd.Next(8)));
            }
            if (PacketView.TryParse(f, out PacketView v, out BadFrameKind k))
            {
                parsed++;
                Assert.Equal(BadFrameKind.None, k);
                // Every region the view exposes lies inside the frame.
                _ = v.Payload.Length + v.IpPacket.Length + v.TcpSegment.Length;
                Assert.InRange(v.PayloadOffset + v.PayloadLength, 0, f.Length);
                Assert.InRange(v.L3Offset + v.IpTotalLength, 0, f.Length);
                if (v.SackBlockCount > 0)
                {
                    Assert.InRange(v.SackOffset + 8 * v.SackBlockCount, 0, v.L4Offset + v.TcpHeaderLength);
                }
            }
            else
            {
                Assert.NotEqual(BadFrameKind.None, k);
            }
            if ((i & 1) == 0)
            {
                h.Pvm(f);
                h.Svm(rnd.Next(4) == 0 ? seed : f);
            }
            else
            {
                h.Svm(f);
                h.Pvm(f);
            }
            if (rnd.Next(500) == 0)
            {
                h.Time.Advance(TimeSpan.FromSeconds(2));
                h.Engine.OnTick();
                h.Engine.OnCheckpointCommitted();
            }
        }
        _out.WriteLine($"{parsed} of 20000 mutated frames parsed; bad by kind: {string.Join(", ", h.Engine.Counters.BadFramesByKind.Select(kv => $"{kv.Key}={kv.Value}"))}");
        Assert.Equal(0, h.Engine.Counters.InternalErrors);
        Assert.InRange(parsed, 2000, 19_999);
        h.Engine.OnCheckpointCommitted();
        Assert.Equal(0, h.Engine.Counters.HeldFrames);
        Assert.Equal(h.Engine.Counters.PvmFrames, h.Engine.Counters.ReleasedFrames);
    }
}
