using System.Buffers.Binary;
using static Colo.Proxy.Tests.Frames;

namespace Colo.Proxy.Tests;

/// <summary>The rewriter with IPv6 connections, and its table bound and expiry rules (issue 4, item 3).</summary>
public class RewriterIpv6AndBoundsTests
{
    // IPv6 + TCP: Ethernet 14 + IPv6 40; seq at +4, ack at +8 of the TCP header.
    private static uint Seq6(byte[] f) => BinaryPrimitives.ReadUInt32BigEndian(f.AsSpan(54 + 4));
    private static uint Ack6(byte[] f) => BinaryPrimitives.ReadUInt32BigEndian(f.AsSpan(54 + 8));

    private static bool Valid6(byte[] f) => PacketView.TryParse(f, out PacketView v, out _) && Checksum.VerifyTcp(v);

    private static byte[] In6(uint seq, uint ack, byte flags, ReadOnlySpan<byte> payload) =>
        Tcp6(ClientIp6, ClientPort, GuestIp6, GuestPort, seq, ack, flags, payload);

    [Fact]
    public void Ipv6Connection_OffsetLearned_BothDirectionsTranslated_ChecksumsValid()
    {
        const uint clientIsn = 100, pvmIsn = 70000, svmIsn = 3000;
        var rw = new SequenceRewriter();
        rw.RewriteFromClient(In6(clientIsn, 0, SYN, default));
        rw.RewriteFromSvm(Out6(svmIsn, clientIsn + 1, SYN | ACK, default));
        byte[] ack = In6(clientIsn + 1, pvmIsn + 1, ACK, default);
        rw.RewriteFromClient(ack);
        Assert.Equal(svmIsn + 1, Ack6(ack));
        Assert.True(Valid6(ack));
        byte[] data = Out6(svmIsn + 1, clientIsn + 1, ACK | PSH, Bytes("v6 data"));
        rw.RewriteFromSvm(data);
        Assert.Equal(pvmIsn + 1, Seq6(data));
        Assert.True(Valid6(data));
        Assert.Equal(1, rw.ConnectionCount);
    }

    [Fact]
    public void Ipv4AndIpv6_SamePortsAndV4MappedAddresses_AreDifferentConnections()
    {
        var rw = new SequenceRewriter();
        rw.RewriteFromSvm(Out(5000, 1, SYN | ACK, default));
        rw.RewriteFromSvm(Out6(5000, 1, SYN | ACK, default));
        Assert.Equal(2, rw.ConnectionCount);
    }

    [Fact]
    public void FullTable_EvictsAConnectionWithoutOffsetFirst()
    {
        var time = new FakeTime();
        var rw = new SequenceRewriter(time, maxConnections: 2);
        // Connection A (port 40000): offset 90000-5000 (needs translation); connection B (port 40001): offset 0.
        rw.RewriteFromClient(In(1000, 0, SYN, default));
        rw.RewriteFromSvm(Out(5000, 1001, SYN | ACK, default));
        rw.RewriteFromClient(In(1001, 90001, ACK, default));
        time.Advance(TimeSpan.FromSeconds(1));
        byte[] synB = Tcp(ClientIp, 40001, GuestIp, GuestPort, 2000, 0, SYN, default);
        rw.RewriteFromClient(synB);
        rw.RewriteFromSvm(Tcp(GuestIp, GuestPort, ClientIp, 40001, 7000, 2001, SYN | ACK, default));
        rw.RewriteFromClient(Tcp(ClientIp, 40001, GuestIp, GuestPort, 2001, 7001, ACK, default));
        // A is now the least recently used, but B is the one whose loss changes nothing.
        rw.RewriteFromSvm(Tcp(GuestIp, GuestPort, ClientIp, 40002, 9000, 1, SYN | ACK, default));
        Assert.Equal(1, rw.Evictions);
        byte[] data = Out(5001, 1001, ACK, Bytes("x"));
        rw.RewriteFromSvm(data);
        Assert.Equal(90001u, BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(38))); // A still translated
    }

    [Fact]
    public void AfterFailover_AnIdleConnectionWithAnOffsetIsKept_UntilItCloses()
    {
        var time = new FakeTime();
        var rw = new SequenceRewriter(time, idle: TimeSpan.FromMinutes(1), closedIdle: TimeSpan.FromSeconds(5));
        rw.RewriteFromClient(In(1000, 0, SYN, default));
        rw.RewriteFromSvm(Out(5000, 1001, SYN | ACK, default));
        rw.RewriteFromClient(In(1001, 90001, ACK, default));
        rw.LearnOffsets = false; // failover
        time.Advance(TimeSpan.FromHours(3));
        rw.Expire();
        Assert.Equal(1, rw.ConnectionCount);
        byte[] keepalive = Out(5000, 1001, ACK, default);
        rw.RewriteFromSvm(keepalive);
        Assert.Equal(90000u, BinaryPrimitives.ReadUInt32BigEndian(keepalive.AsSpan(38)));
        rw.RewriteFromSvm(Out(5001, 1001, ACK | FIN, default));
        rw.RewriteFromClient(In(1001, 90002, ACK | FIN, default));
        time.Advance(TimeSpan.FromSeconds(6));
        rw.Expire();
        Assert.Equal(0, rw.ConnectionCount);
    }
}
