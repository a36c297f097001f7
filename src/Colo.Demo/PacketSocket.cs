using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Colo.Demo;

/// <summary>
/// An <c>AF_PACKET</c>/<c>SOCK_RAW</c> socket bound to one interface for every protocol (<c>ETH_P_ALL</c>): it sees each
/// frame the interface receives and each frame sent through it (except its own), Ethernet header included, and can send
/// whole frames. Needs CAP_NET_RAW. Every wait has a timeout. <see cref="Receive"/> and <see cref="Send"/> may run on
/// different threads; <see cref="Dispose"/> only once neither runs.
/// </summary>
internal sealed unsafe partial class PacketSocket : IDisposable
{
    /// <summary><c>sll_pkttype</c> of a frame sent by this host.</summary>
    public const byte PacketOutgoing = 4;

    private const int AF_PACKET = 17;
    private const int SOCK_RAW = 3;
    private const int SOCK_NONBLOCK = 0x800;
    private const int SOCK_CLOEXEC = 0x80000;
    private const ushort ETH_P_ALL = 0x0003;
    private const int SOL_SOCKET = 1;
    private const int SO_RCVBUF = 8;
    private const int SO_RCVBUFFORCE = 33;
    private const int SOL_PACKET = 263;
    private const int PACKET_STATISTICS = 6;
    private const int MSG_TRUNC = 0x20;
    private const int MSG_DONTWAIT = 0x40;
    private const short POLLIN = 0x1;
    private const short POLLOUT = 0x4;
    private const int EINTR = 4;
    private const int EAGAIN = 11;
    private const int SockaddrLlLength = 20;

    private readonly int _fd;
    private readonly int _ifIndex;
    private int _disposed;

    private PacketSocket(int fd, int ifIndex)
    {
        _fd = fd;
        _ifIndex = ifIndex;
    }

    /// <summary>Opens the socket on interface <paramref name="ifIndex"/> with a receive buffer of <paramref name="receiveBufferBytes"/>.</summary>
    /// <param name="ifIndex">Interface index.</param>
    /// <param name="receiveBufferBytes">Receive buffer; forced past <c>rmem_max</c> when allowed (CAP_NET_ADMIN).</param>
    /// <returns>The socket.</returns>
    /// <exception cref="IOException">socket or bind failed (message carries errno; EPERM: not root).</exception>
    public static PacketSocket Open(int ifIndex, int receiveBufferBytes)
    {
        int protocol = (ushort)System.Net.IPAddress.HostToNetworkOrder((short)ETH_P_ALL);
        int fd = SysSocket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
        if (fd < 0)
            throw new IOException($"socket(AF_PACKET, SOCK_RAW, ETH_P_ALL) failed: {Describe(Marshal.GetLastPInvokeError())}");
        var socket = new PacketSocket(fd, ifIndex);
        try
        {
            int size = receiveBufferBytes;
            if (SetSockOpt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(int)) < 0)
                _ = SetSockOpt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(int));
            byte* addr = stackalloc byte[SockaddrLlLength];
            socket.FillAddress(addr, ETH_P_ALL, null);
            if (Bind(fd, addr, SockaddrLlLength) < 0)
                throw new IOException($"bind(AF_PACKET, ifindex {ifIndex}) failed: {Describe(Marshal.GetLastPInvokeError())}");
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Waits up to <paramref name="timeoutMs"/> for a frame and copies its first bytes into <paramref name="buffer"/>.</summary>
    /// <param name="buffer">Destination; a longer frame is truncated (its headers are what matters).</param>
    /// <param name="timeoutMs">Longest wait in milliseconds.</param>
    /// <param name="packetType"><c>sll_pkttype</c>: 0 to this host, 1 broadcast, 2 multicast, 3 other host, 4 outgoing.</param>
    /// <returns>Bytes copied; 0 when nothing arrived in time.</returns>
    /// <exception cref="IOException">poll or recvfrom failed.</exception>
    public int Receive(Span<byte> buffer, int timeoutMs, out byte packetType)
    {
        packetType = 0;
        byte* addr = stackalloc byte[SockaddrLlLength];
        fixed (byte* p = buffer)
        {
            while (true)
            {
                uint addrLen = SockaddrLlLength;
                nint n = RecvFrom(_fd, p, buffer.Length, MSG_TRUNC | MSG_DONTWAIT, addr, &addrLen);
                if (n >= 0)
                {
                    packetType = addr[10];
                    return (int)Math.Min(n, buffer.Length);
                }
                int err = Marshal.GetLastPInvokeError();
                if (err == EINTR)
                    continue;
                if (err != EAGAIN)
                    throw new IOException($"recvfrom(AF_PACKET) failed: {Describe(err)}");
                var pfd = new PollFd { Fd = _fd, Events = POLLIN };
                int r = Poll(&pfd, 1, timeoutMs);
                if (r == 0)
                    return 0;
                if (r < 0 && Marshal.GetLastPInvokeError() is int e && e != EINTR)
                    throw new IOException($"poll(AF_PACKET) failed: {Describe(e)}");
            }
        }
    }

    /// <summary>Sends one whole Ethernet frame out of the interface, waiting at most <paramref name="timeoutMs"/> for buffer space.</summary>
    /// <param name="frame">The frame, Ethernet header included.</param>
    /// <param name="etherType">Its EtherType (the address's protocol).</param>
    /// <param name="timeoutMs">Longest wait for buffer space in milliseconds.</param>
    /// <exception cref="IOException">sendto failed, was short, or no buffer space came in time.</exception>
    public void Send(ReadOnlySpan<byte> frame, ushort etherType, int timeoutMs)
    {
        byte* addr = stackalloc byte[SockaddrLlLength];
        FillAddress(addr, etherType, frame.Length >= 6 ? frame[..6] : null);
        fixed (byte* p = frame)
        {
            bool waited = false;
            while (true)
            {
                nint n = SendTo(_fd, p, frame.Length, 0, addr, SockaddrLlLength);
                if (n == frame.Length)
                    return;
                if (n >= 0)
                    throw new IOException($"sendto(AF_PACKET) was short: {n} of {frame.Length} bytes");
                int err = Marshal.GetLastPInvokeError();
                if (err == EINTR)
                    continue;
                if (err != EAGAIN || waited)
                    throw new IOException($"sendto(AF_PACKET) failed: {Describe(err)}");
                var pfd = new PollFd { Fd = _fd, Events = POLLOUT };
                _ = Poll(&pfd, 1, timeoutMs);
                waited = true;
            }
        }
    }

    /// <summary>Reads and resets the kernel's counters: frames passed to the socket (drops included) and frames dropped.</summary>
    /// <returns>The counters since the last call (or the bind).</returns>
    public (long Packets, long Drops) ReadStatistics()
    {
        uint* stats = stackalloc uint[2];
        uint len = 8;
        if (GetSockOpt(_fd, SOL_PACKET, PACKET_STATISTICS, stats, &len) < 0)
            return (0, 0);
        return (stats[0], stats[1]);
    }

    /// <summary>Closes the socket. Idempotent.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
            _ = Close(_fd);
    }

    private void FillAddress(byte* addr, ushort protocol, ReadOnlySpan<byte> mac)
    {
        var a = new Span<byte>(addr, SockaddrLlLength);
        a.Clear();
        ushort family = AF_PACKET;
        MemoryMarshal.Write(a, in family);
        BinaryPrimitives.WriteUInt16BigEndian(a[2..], protocol);
        MemoryMarshal.Write(a[4..], in _ifIndex);
        if (mac.Length == 6)
        {
            a[11] = 6;
            mac.CopyTo(a[12..]);
        }
    }

    private static string Describe(int errno) => $"errno {errno} ({Marshal.GetPInvokeErrorMessage(errno)})";

    [StructLayout(LayoutKind.Sequential)]
    private struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    [LibraryImport("libc", EntryPoint = "socket", SetLastError = true)]
    private static partial int SysSocket(int domain, int type, int protocol);

    [LibraryImport("libc", EntryPoint = "bind", SetLastError = true)]
    private static partial int Bind(int fd, byte* addr, uint addrLen);

    [LibraryImport("libc", EntryPoint = "setsockopt", SetLastError = true)]
    private static partial int SetSockOpt(int fd, int level, int name, void* value, uint valueLen);

    [LibraryImport("libc", EntryPoint = "getsockopt", SetLastError = true)]
    private static partial int GetSockOpt(int fd, int level, int name, void* value, uint* valueLen);

    [LibraryImport("libc", EntryPoint = "recvfrom", SetLastError = true)]
    private static partial nint RecvFrom(int fd, byte* buf, nint len, int flags, byte* addr, uint* addrLen);

    [LibraryImport("libc", EntryPoint = "sendto", SetLastError = true)]
    private static partial nint SendTo(int fd, byte* buf, nint len, int flags, byte* addr, uint addrLen);

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    private static partial int Poll(PollFd* fds, nuint nfds, int timeoutMs);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);
}
