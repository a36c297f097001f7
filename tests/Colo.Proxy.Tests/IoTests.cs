using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Colo.Proxy.Tests;

/// <summary>Runs only as root with /dev/net/tun and the ip tool available.</summary>
public sealed class RootFactAttribute : FactAttribute
{
    public RootFactAttribute()
    {
        if (!OperatingSystem.IsLinux() || Environment.UserName != "root" || !File.Exists("/dev/net/tun") ||
            !(File.Exists("/usr/sbin/ip") || File.Exists("/sbin/ip") || File.Exists("/usr/bin/ip")))
        {
            Skip = "requires root, /dev/net/tun and iproute2";
        }
    }
}

public class TapDeviceTests
{
    private static void Ip(string args)
    {
        var psi = new ProcessStartInfo("ip", args) { RedirectStandardError = true, RedirectStandardOutput = true };
        using Process p = Process.Start(psi)!;
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0)
        {
            throw new InvalidOperationException($"ip {args}: {err}");
        }
    }

    [Fact]
    public void Open_MissingInterface_ThrowsIOException()
    {
        IOException e = Assert.Throws<IOException>(() => TapDevice.Open("coloNoSuch0"));
        Assert.Contains("does not exist", e.Message);
    }

    [RootFact]
    public void Tap_WriteFrameReceivedByKernel_ReadKernelArp_DisposeUnblocksReader()
    {
        string name = "coloT" + (Environment.ProcessId % 100000);
        byte subnet = (byte)(100 + Environment.ProcessId % 100);
        Ip($"tuntap add dev {name} mode tap");
        try
        {
            Ip($"addr add 10.213.{subnet}.1/24 dev {name}");
            using TapDevice tap = TapDevice.Open(name);
            Ip($"link set {name} up");
            byte[] tapMac = Convert.FromHexString(File.ReadAllText($"/sys/class/net/{name}/address").Trim().Replace(":", ""));
            var local = new IPAddress(new byte[] { 10, 213, subnet, 1 });

            // Write: a UDP datagram from 10.213.x.2 injected into the tap reaches a socket on 10.213.x.1.
            using var rx = new UdpClient(new IPEndPoint(local, 0));
            int port = ((IPEndPoint)rx.Client.LocalEndPoint!).Port;
            byte[] payload = "hello-tap"u8.ToArray();
            byte[] frame = new byte[14 + 20 + 8 + payload.Length];
            tapMac.CopyTo(frame, 0);
            new byte[] { 0x02, 0, 0, 0, 0, 2 }.CopyTo(frame, 6);
            BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(12), 0x0800);
            frame[14] = 0x45;
            BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(16), (ushort)(20 + 8 + payload.Length));
            frame[22] = 64;
            frame[23] = 17;
            new byte[] { 10, 213, subnet, 2, 10, 213, subnet, 1 }.CopyTo(frame, 26);
            BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(24), Frames.RefChecksum(frame.AsSpan(14, 20)));
            BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(34), 5555);
            BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(36), (ushort)port);
            BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(38), (ushort)(8 + payload.Length));
            payload.CopyTo(frame, 42); // UDP checksum 0 = none
            tap.Write(frame);
            Task<UdpReceiveResult> recv = rx.ReceiveAsync();
            Assert.True(recv.Wait(TimeSpan.FromSeconds(5)), "kernel did not deliver the injected frame");
            Assert.Equal(payload, recv.Result.Buffer);

            // Read: sending to an unresolved neighbour makes the kernel ARP for it out of the tap.
            using var tx = new UdpClient(new IPEndPoint(local, 0));
            tx.Send(new byte[] { 1 }, 1, new IPEndPoint(new IPAddress(new byte[] { 10, 213, subnet, 77 }), 9));
            var arp = Task.Run(() =>
            {
                byte[] buf = new byte[2048];
                while (true)
                {
                    int n = tap.Read(buf);
                    if (n == 0)
                    {
                        return Array.Empty<byte>();
                    }
                    if (n >= 42 && buf[12] == 0x08 && buf[13] == 0x06)
                    {
                        return buf.AsSpan(0, n).ToArray();
                    }
                }
            });
            Assert.True(arp.Wait(TimeSpan.FromSeconds(5)), "no ARP request read from the tap");
            Assert.Equal(new byte[] { 10, 213, subnet, 77 }, arp.Result.AsSpan(38, 4).ToArray());

            // Dispose while a reader is blocked: Read returns 0.
            using var tap2Ready = new ManualResetEventSlim();
            var blocked = Task.Run(() =>
            {
                byte[] buf = new byte[2048];
                tap2Ready.Set();
                int n;
                do
                {
                    n = tap.Read(buf);
                }
                while (n > 0);
                return n;
            });
            tap2Ready.Wait();
            Thread.Sleep(200);
            tap.Dispose();
            Assert.True(blocked.Wait(TimeSpan.FromSeconds(3)), "blocked reader not woken by Dispose");
            Assert.Equal(0, blocked.Result);
            Assert.Equal(0, tap.Read(new byte[100]));
            Assert.Throws<ObjectDisposedException>(() => tap.Write(frame));
        }
        finally
        {
            try
            {
                Ip($"link del {name}");
            }
            catch (InvalidOperationException)
            {
            }
        }
    }
}

public class NetdevStreamTests
{
    private static string TempPath() => Path.Combine(Path.GetTempPath(), $"colo-ns-{Environment.ProcessId}-{Guid.NewGuid():N}.sock");

    private static async Task<byte[]> ReadExact(Socket s, int n)
    {
        byte[] b = new byte[n];
        int got = 0;
        while (got < n)
        {
            int r = await s.ReceiveAsync(b.AsMemory(got), SocketFlags.None);
            if (r == 0)
            {
                throw new EndOfStreamException();
            }
            got += r;
        }
        return b;
    }

    [Fact]
    public async Task Loopback_FramesBothWays_OversizeRejected_EofReturnsZero()
    {
        string path = TempPath();
        // A stale file left by a dead process (nobody listening) is replaced. (.NET deletes its own socket files on
        // dispose, so a plain file stands in for the stale socket.)
        File.WriteAllText(path, "");

        using var listener = new NetdevStreamListener(path);
        using var qemu = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        Task<NetdevStreamConnection> accept = listener.AcceptAsync(TimeSpan.FromSeconds(5), CancellationToken.None);
        await qemu.ConnectAsync(new UnixDomainSocketEndPoint(path));
        using NetdevStreamConnection conn = await accept;

        byte[] f1 = Frames.Out(1, 2, Frames.ACK, "abc"u8);
        byte[] wire = new byte[4 + f1.Length + 4 + 60];
        BinaryPrimitives.WriteUInt32BigEndian(wire, (uint)f1.Length);
        f1.CopyTo(wire, 4);
        BinaryPrimitives.WriteUInt32BigEndian(wire.AsSpan(4 + f1.Length), 60);
        await qemu.SendAsync(wire, SocketFlags.None);

        byte[] buf = new byte[NetdevStreamConnection.MaxFrameLength];
        int n = await conn.ReadFrameAsync(buf, CancellationToken.None);
        Assert.Equal(f1, buf.AsSpan(0, n).ToArray());
        n = await conn.ReadFrameAsync(buf, CancellationToken.None);
        Assert.Equal(60, n);

        Assert.True(conn.WriteFrame(f1));
        byte[] hdr = await ReadExact(qemu, 4);
        Assert.Equal((uint)f1.Length, BinaryPrimitives.ReadUInt32BigEndian(hdr));
        Assert.Equal(f1, await ReadExact(qemu, f1.Length));
        Assert.Equal(1, conn.FramesWritten);

        byte[] bad = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(bad, NetdevStreamConnection.MaxFrameLength + 1);
        await qemu.SendAsync(bad, SocketFlags.None);
        await Assert.ThrowsAsync<InvalidDataException>(async () => await conn.ReadFrameAsync(buf, CancellationToken.None));
    }

    [Fact]
    public async Task FrameLargerThanCallerBuffer_DiscardedAndCounted_NextFrameRead()
    {
        string path = TempPath();
        using var listener = new NetdevStreamListener(path);
        using var qemu = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        Task<NetdevStreamConnection> accept = listener.AcceptAsync(TimeSpan.FromSeconds(5), CancellationToken.None);
        await qemu.ConnectAsync(new UnixDomainSocketEndPoint(path));
        using NetdevStreamConnection conn = await accept;
        byte[] wire = new byte[4 + 150 + 4 + 0 + 4 + 40];
        BinaryPrimitives.WriteUInt32BigEndian(wire, 150);
        BinaryPrimitives.WriteUInt32BigEndian(wire.AsSpan(154), 0);
        BinaryPrimitives.WriteUInt32BigEndian(wire.AsSpan(158), 40);
        wire[162] = 0xAB;
        await qemu.SendAsync(wire, SocketFlags.None);
        byte[] buf = new byte[64];
        int n = await conn.ReadFrameAsync(buf, CancellationToken.None);
        Assert.Equal(40, n);
        Assert.Equal(0xAB, buf[0]);
        Assert.Equal(1, conn.FramesTooLongForBuffer);
    }

    [Fact]
    public async Task PeerClosesBetweenFrames_ReadReturnsZero()
    {
        string path = TempPath();
        using var listener = new NetdevStreamListener(path);
        var qemu = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        Task<NetdevStreamConnection> accept = listener.AcceptAsync(TimeSpan.FromSeconds(5), CancellationToken.None);
        await qemu.ConnectAsync(new UnixDomainSocketEndPoint(path));
        using NetdevStreamConnection conn = await accept;
        qemu.Dispose();
        Assert.Equal(0, await conn.ReadFrameAsync(new byte[NetdevStreamConnection.MaxFrameLength], CancellationToken.None));
    }

    [Fact]
    public async Task Accept_NoClient_TimesOut()
    {
        using var listener = new NetdevStreamListener(TempPath());
        await Assert.ThrowsAsync<TimeoutException>(() => listener.AcceptAsync(TimeSpan.FromMilliseconds(100), CancellationToken.None));
    }

    [Fact]
    public async Task WriteFrame_PeerNotReading_DropsInsteadOfBlockingForever()
    {
        string path = TempPath();
        using var listener = new NetdevStreamListener(path);
        using var qemu = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        Task<NetdevStreamConnection> accept = listener.AcceptAsync(TimeSpan.FromSeconds(5), CancellationToken.None);
        await qemu.ConnectAsync(new UnixDomainSocketEndPoint(path));
        using NetdevStreamConnection conn = await accept;
        byte[] frame = new byte[1500];
        var sw = Stopwatch.StartNew();
        int i = 0;
        while (conn.FramesDropped == 0 && sw.Elapsed < TimeSpan.FromSeconds(30))
        {
            try
            {
                conn.WriteFrame(frame);
            }
            catch (IOException)
            {
                break; // stalled mid-frame: connection closed, also acceptable
            }
            i++;
        }
        Assert.True(conn.FramesDropped > 0, $"no drop after {i} frames");
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30));
    }
}
