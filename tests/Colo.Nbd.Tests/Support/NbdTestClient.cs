using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;

namespace Colo.Nbd.Tests.Support;

/// <summary>A minimal NBD client speaking the raw protocol, for driving the server byte by byte in tests.</summary>
internal sealed class NbdTestClient : IAsyncDisposable
{
    public const ulong NbdMagic = 0x4e42444d41474943;
    public const ulong IHaveOpt = 0x49484156454F5054;
    public const ulong OptionReplyMagic = 0x3e889045565a9;
    public const uint RequestMagic = 0x25609513;
    public const uint SimpleReplyMagic = 0x67446698;

    public const uint OptExportName = 1, OptAbort = 2, OptList = 3, OptStartTls = 5, OptInfo = 6, OptGo = 7, OptStructuredReply = 8;
    public const uint RepAck = 1, RepServer = 2, RepInfo = 3;
    public const uint RepErrUnsup = 0x80000001, RepErrInvalid = 0x80000003, RepErrUnknown = 0x80000006;
    public const ushort InfoExport = 0, InfoName = 1, InfoBlockSize = 3;
    public const ushort CmdRead = 0, CmdWrite = 1, CmdDisc = 2, CmdFlush = 3, CmdTrim = 4, CmdCache = 5, CmdWriteZeroes = 6, CmdBlockStatus = 7;
    public const ushort FlagFua = 1, FlagNoHole = 2, FlagDf = 4;
    public const ushort TfHasFlags = 1, TfReadOnly = 2, TfSendFlush = 4, TfSendFua = 8, TfSendTrim = 32, TfSendWriteZeroes = 64, TfCanMultiConn = 256;
    public const uint EPerm = 1, EInval = 22, ENoSpc = 28, EIO = 5;

    public static readonly TimeSpan IoTimeout = TimeSpan.FromSeconds(10);

    private NbdTestClient(Socket socket)
    {
        Socket = socket;
        Stream = new NetworkStream(socket, ownsSocket: true);
    }

    public Socket Socket { get; }

    public NetworkStream Stream { get; }

    public static async Task<NbdTestClient> ConnectAsync(string socketPath)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath));
        return new NbdTestClient(socket);
    }

    public static async Task<NbdTestClient> ConnectTcpAsync(System.Net.IPEndPoint endpoint)
    {
        var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(endpoint);
        return new NbdTestClient(socket);
    }

    /// <summary>Connects, does the handshake with NBD_OPT_GO, and returns the client in transmission.</summary>
    public static async Task<(NbdTestClient Client, ulong Size, ushort Flags)> ConnectAndGoAsync(string socketPath, string export)
    {
        NbdTestClient client = await ConnectAsync(socketPath);
        await client.ReadGreetingAsync();
        await client.SendClientFlagsAsync(3);
        (ulong size, ushort flags) = await client.GoAsync(export);
        return (client, size, flags);
    }

    public ValueTask DisposeAsync()
    {
        Stream.Dispose();
        return ValueTask.CompletedTask;
    }

    public async Task<ushort> ReadGreetingAsync()
    {
        byte[] g = await ReadExactAsync(18);
        Assert.Equal(NbdMagic, BinaryPrimitives.ReadUInt64BigEndian(g));
        Assert.Equal(IHaveOpt, BinaryPrimitives.ReadUInt64BigEndian(g.AsSpan(8)));
        return BinaryPrimitives.ReadUInt16BigEndian(g.AsSpan(16));
    }

    public Task SendClientFlagsAsync(uint flags)
    {
        byte[] b = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, flags);
        return WriteAsync(b);
    }

    public Task SendOptionAsync(uint option, ReadOnlySpan<byte> data, ulong magic = IHaveOpt, uint? length = null)
    {
        byte[] b = new byte[16 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(b, magic);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(12), length ?? (uint)data.Length);
        data.CopyTo(b.AsSpan(16));
        return WriteAsync(b);
    }

    public async Task<(uint Option, uint Type, byte[] Data)> ReadOptionReplyAsync()
    {
        byte[] h = await ReadExactAsync(20);
        Assert.Equal(OptionReplyMagic, BinaryPrimitives.ReadUInt64BigEndian(h));
        uint length = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(16));
        byte[] data = await ReadExactAsync((int)length);
        return (BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(8)), BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(12)), data);
    }

    public static byte[] InfoData(string name, params ushort[] infos)
    {
        byte[] n = Encoding.UTF8.GetBytes(name);
        byte[] b = new byte[4 + n.Length + 2 + (2 * infos.Length)];
        BinaryPrimitives.WriteUInt32BigEndian(b, (uint)n.Length);
        n.CopyTo(b, 4);
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(4 + n.Length), (ushort)infos.Length);
        for (int i = 0; i < infos.Length; i++)
        {
            BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(4 + n.Length + 2 + (2 * i)), infos[i]);
        }

        return b;
    }

    /// <summary>Sends NBD_OPT_GO and reads the replies up to the ACK; fails the test on an error reply.</summary>
    public async Task<(ulong Size, ushort Flags)> GoAsync(string export)
    {
        await SendOptionAsync(OptGo, InfoData(export, InfoBlockSize));
        ulong size = 0;
        ushort flags = 0;
        while (true)
        {
            (uint option, uint type, byte[] data) = await ReadOptionReplyAsync();
            Assert.Equal(OptGo, option);
            if (type == RepAck)
            {
                return (size, flags);
            }

            Assert.Equal(RepInfo, type);
            if (BinaryPrimitives.ReadUInt16BigEndian(data) == InfoExport)
            {
                size = BinaryPrimitives.ReadUInt64BigEndian(data.AsSpan(2));
                flags = BinaryPrimitives.ReadUInt16BigEndian(data.AsSpan(10));
            }
        }
    }

    public Task SendRequestAsync(ushort type, ulong handle, ulong offset, uint length, ushort flags = 0, byte[]? payload = null, uint magic = RequestMagic)
    {
        byte[] b = new byte[28 + (payload?.Length ?? 0)];
        BinaryPrimitives.WriteUInt32BigEndian(b, magic);
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(6), type);
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(8), handle);
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(16), offset);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(24), length);
        payload?.CopyTo(b, 28);
        return WriteAsync(b);
    }

    public async Task<(uint Error, ulong Handle)> ReadReplyAsync()
    {
        byte[] h = await ReadExactAsync(16);
        Assert.Equal(SimpleReplyMagic, BinaryPrimitives.ReadUInt32BigEndian(h));
        return (BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(4)), BinaryPrimitives.ReadUInt64BigEndian(h.AsSpan(8)));
    }

    /// <summary>One READ, waiting for its reply (no other request in flight).</summary>
    public async Task<(uint Error, byte[] Data)> ReadBlockAsync(ulong offset, uint length, ulong handle = 1, ushort flags = 0)
    {
        await SendRequestAsync(CmdRead, handle, offset, length, flags);
        (uint error, ulong h) = await ReadReplyAsync();
        Assert.Equal(handle, h);
        return (error, error == 0 ? await ReadExactAsync((int)length) : []);
    }

    /// <summary>One request without reply data, waiting for its reply.</summary>
    public async Task<uint> CommandAsync(ushort type, ulong offset, uint length, ushort flags = 0, byte[]? payload = null, ulong handle = 7)
    {
        await SendRequestAsync(type, handle, offset, length, flags, payload);
        (uint error, ulong h) = await ReadReplyAsync();
        Assert.Equal(handle, h);
        return error;
    }

    public async Task WriteAsync(byte[] data)
    {
        using var cts = new CancellationTokenSource(IoTimeout);
        await Stream.WriteAsync(data, cts.Token);
    }

    public async Task<byte[]> ReadExactAsync(int count)
    {
        byte[] b = new byte[count];
        using var cts = new CancellationTokenSource(IoTimeout);
        await Stream.ReadExactlyAsync(b, cts.Token);
        return b;
    }

    /// <summary>True when the server closes the connection (read returns 0 or fails) within the timeout.</summary>
    public async Task<bool> WaitClosedAsync(TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? IoTimeout);
        byte[] b = new byte[4096];
        try
        {
            while (true)
            {
                int n = await Stream.ReadAsync(b, cts.Token);
                if (n == 0)
                {
                    return true;
                }
            }
        }
        catch (OperationCanceledException)
        {
            return false;
        }
        catch (IOException)
        {
            return true;
        }
    }
}
