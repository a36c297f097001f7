using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using Colo.Node.Secondary;
using Colo.Proxy;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;
using static Colo.Node.Tests.Support.PrimaryProxyRig;

namespace Colo.Node.Tests;

/// <summary>
/// <see cref="SecondaryProxy"/>'s failover replay: a fake SVM QEMU on a real <c>-netdev stream</c> unix socket sends guest
/// TCP output, the test plays the primary's mirror (<see cref="SecondaryProxy.OnClientFrame"/>) and the failover
/// (<see cref="SecondaryProxy.TakeOver"/> with a recording client port instead of a TAP).
/// </summary>
public sealed class SecondaryProxyReplayTests : IDisposable
{
    private const uint GuestIp = 0xC612000A;  // 198.18.0.10
    private const uint ClientIp = 0xC6120064; // 198.18.0.100
    private const ushort GuestPort = 6379;
    private const ushort ClientPort = 40000;
    private const byte Ack = 0x10, Psh = 0x08;

    private readonly string _dir = Directory.CreateTempSubdirectory("colo-replay-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public async Task Failover_ReplaysUnacknowledgedSvmOutput_AfterTheAnnouncement_BeforeNewOutput()
    {
        await using var svm = await FakeSvm.StartAsync(Path.Combine(_dir, "svm.sock"));
        using var proxy = new SecondaryProxy(NullLogger.Instance);
        proxy.Activate(svm.Connection, 1);
        Task reader = Task.Run(() => proxy.RunSvmOutputAsync(svm.Connection));

        byte[] r1 = Segment(GuestIp, GuestPort, ClientIp, ClientPort, 1000, 500, Ack | Psh, ":1\r\n"u8);
        byte[] r2 = Segment(GuestIp, GuestPort, ClientIp, ClientPort, 1004, 514, Ack | Psh, ":2\r\n"u8);
        byte[] pureAck = Segment(GuestIp, GuestPort, ClientIp, ClientPort, 1008, 528, Ack, default);
        await svm.SendAsync(r1);
        await svm.SendAsync(r2);
        await svm.SendAsync(pureAck);
        await WaitUntilAsync(() => proxy.Counters()["svm_frames"] == 3, "the proxy to read the SVM's frames");
        Assert.Equal(r1.Length + r2.Length, proxy.Counters()["unacked_bytes"]);

        // The client acknowledged r1 (the primary released the PVM's copy); r2's copy died with the primary.
        proxy.OnClientFrame(new ReadOnlySequence<byte>(Segment(ClientIp, ClientPort, GuestIp, GuestPort, 514, 1004, Ack | Psh, "INCR\r\n"u8)));
        Assert.Equal(r2.Length, proxy.Counters()["unacked_bytes"]);

        var toClients = new List<byte[]>();
        byte[] announcement = new byte[GratuitousArp.FrameLength];
        announcement[0] = 0xFF;
        int replayed = proxy.TakeOver(announcement, f =>
        {
            lock (toClients)
                toClients.Add(f.ToArray());
        });
        Assert.Equal(1, replayed);

        byte[] after = Segment(GuestIp, GuestPort, ClientIp, ClientPort, 1008, 534, Ack | Psh, ":3\r\n"u8);
        await svm.SendAsync(after);
        await WaitUntilAsync(() =>
        {
            lock (toClients)
                return toClients.Count == 5;
        }, "the SVM's next frame to reach the client port");

        Assert.Equal(announcement, toClients[0]);
        Assert.Equal(announcement, toClients[1]);
        Assert.Equal(announcement, toClients[2]);
        Assert.Equal(r2, toClients[3]);
        Assert.Equal(after, toClients[4]);
        Dictionary<string, long> c = proxy.Counters();
        Assert.Equal(1, c["failover_replayed_segments"]);
        Assert.Equal(r2.Length, c["failover_replayed_bytes"]);
        Assert.Equal(0, c["unacked_bytes"]);
        Assert.Equal(r1.Length + r2.Length, c["unacked_bytes_peak"]);
        Assert.Equal(0, c["unacked_not_retained"]);

        svm.Close();
        await reader.WaitAsync(WaitTimeout);
    }

    [Fact]
    public async Task CheckpointActivation_ForgetsTheOldGenerationsOutput()
    {
        await using var svm1 = await FakeSvm.StartAsync(Path.Combine(_dir, "svm1.sock"));
        await using var svm2 = await FakeSvm.StartAsync(Path.Combine(_dir, "svm2.sock"));
        using var proxy = new SecondaryProxy(NullLogger.Instance);
        proxy.Activate(svm1.Connection, 1);
        Task reader1 = Task.Run(() => proxy.RunSvmOutputAsync(svm1.Connection));
        await svm1.SendAsync(Segment(GuestIp, GuestPort, ClientIp, ClientPort, 1000, 500, Ack | Psh, ":1\r\n"u8));
        await WaitUntilAsync(() => proxy.Counters()["unacked_segments"] == 1, "the SVM's reply to be kept");

        proxy.Hold();
        proxy.Activate(svm2.Connection, 2);
        Assert.Equal(0, proxy.Counters()["unacked_segments"]);
        Task reader2 = Task.Run(() => proxy.RunSvmOutputAsync(svm2.Connection));

        // The old generation's late output is not the active SVM's: neither kept nor replayed.
        await svm1.SendAsync(Segment(GuestIp, GuestPort, ClientIp, ClientPort, 1004, 500, Ack | Psh, ":2\r\n"u8));
        byte[] fresh = Segment(GuestIp, GuestPort, ClientIp, ClientPort, 1004, 500, Ack | Psh, ":2\r\n"u8);
        await svm2.SendAsync(fresh);
        await WaitUntilAsync(() => svm1.Connection.FramesRead == 2, "the proxy to read the old SVM's late frame");
        await WaitUntilAsync(() => proxy.Counters()["unacked_segments"] == 1, "the new SVM's reply to be kept");

        var toClients = new List<byte[]>();
        proxy.TakeOver(new byte[GratuitousArp.FrameLength], f => toClients.Add(f.ToArray()));
        Assert.Equal(4, toClients.Count);
        Assert.Equal(fresh, toClients[3]);

        svm1.Close();
        svm2.Close();
        await Task.WhenAll(reader1, reader2).WaitAsync(WaitTimeout);
    }

    /// <summary>An IPv4 TCP frame (checksums left 0: nothing on this path verifies them).</summary>
    private static byte[] Segment(uint src, ushort sport, uint dst, ushort dport, uint seq, uint ack, byte flags, ReadOnlySpan<byte> payload)
    {
        var f = new byte[14 + 20 + 20 + payload.Length];
        f.AsSpan(0, 12).Fill(0x52);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x0800);
        Span<byte> ip = f.AsSpan(14);
        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(40 + payload.Length));
        ip[8] = 64;
        ip[9] = 6;
        BinaryPrimitives.WriteUInt32BigEndian(ip[12..], src);
        BinaryPrimitives.WriteUInt32BigEndian(ip[16..], dst);
        Span<byte> tcp = ip[20..];
        BinaryPrimitives.WriteUInt16BigEndian(tcp, sport);
        BinaryPrimitives.WriteUInt16BigEndian(tcp[2..], dport);
        BinaryPrimitives.WriteUInt32BigEndian(tcp[4..], seq);
        BinaryPrimitives.WriteUInt32BigEndian(tcp[8..], ack);
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        BinaryPrimitives.WriteUInt16BigEndian(tcp[14..], 65535);
        payload.CopyTo(tcp[20..]);
        return f;
    }

    /// <summary>The SVM QEMU's end of a <c>-netdev stream</c> socket: writes frames with QEMU's framing.</summary>
    private sealed class FakeSvm : IAsyncDisposable
    {
        private readonly NetdevStreamListener _listener;
        private readonly Socket _socket;

        private FakeSvm(NetdevStreamListener listener, Socket socket, NetdevStreamConnection connection)
        {
            _listener = listener;
            _socket = socket;
            Connection = connection;
        }

        /// <summary>The proxy's end.</summary>
        public NetdevStreamConnection Connection { get; }

        public static async Task<FakeSvm> StartAsync(string path)
        {
            var listener = new NetdevStreamListener(path);
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            Task<NetdevStreamConnection> accept = listener.AcceptAsync(WaitTimeout, CancellationToken.None);
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(path)).WaitAsync(WaitTimeout);
            return new FakeSvm(listener, socket, await accept);
        }

        public async Task SendAsync(byte[] frame)
        {
            byte[] wire = new byte[4 + frame.Length];
            BinaryPrimitives.WriteUInt32BigEndian(wire, (uint)frame.Length);
            frame.CopyTo(wire, 4);
            for (int off = 0; off < wire.Length;)
                off += await _socket.SendAsync(wire.AsMemory(off), SocketFlags.None).AsTask().WaitAsync(WaitTimeout);
        }

        /// <summary>The guest's QEMU goes away: the proxy's reader sees end of stream.</summary>
        public void Close() => _socket.Shutdown(SocketShutdown.Both);

        public ValueTask DisposeAsync()
        {
            _socket.Dispose();
            Connection.Dispose();
            _listener.Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
