using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Colo.Link.Tests.Support;
using Xunit.Abstractions;

namespace Colo.Link.Tests;

public sealed class LinkConnectionTests(ITestOutputHelper output)
{
    private readonly TestLogger _logger = new(output);

    private static ValueTask Ignore(MessageType type, ulong epoch, ReadOnlySequence<byte> payload) => default;

    [Fact]
    public async Task Send_ConcurrentSenders_PreserveOrderPerSenderWithoutInterleaving()
    {
        const int Senders = 8;
        const int PerSender = 1500;
        int[] sizes = [0, 1, 100, 1400, 9000, 70_000, 200_000];
        (LinkConnection client, LinkConnection server) = await LinkPair.ConnectAsync(_logger);
        await using LinkConnection c = client;
        await using LinkConnection s = server;

        var nextSeq = new int[Senders];
        var errors = new List<string>();
        int received = 0;
        var allReceived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task loop = server.RunReceiveLoopAsync((type, epoch, payload) =>
        {
            byte[] bytes = payload.ToArray();
            int sender = BinaryPrimitives.ReadInt32BigEndian(bytes);
            int seq = BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(4));
            if (type != MessageType.SvmFrame || epoch != (ulong)(sender * 1_000_000 + seq))
            {
                errors.Add($"bad header {type}/{epoch} for {sender}:{seq}");
            }

            if (seq != nextSeq[sender])
            {
                errors.Add($"sender {sender}: got {seq}, expected {nextSeq[sender]}");
            }

            nextSeq[sender] = seq + 1;
            if (bytes.Length != Math.Max(8, sizes[seq % sizes.Length]) || !HasPattern(bytes, sender, seq))
            {
                errors.Add($"sender {sender} seq {seq}: payload corrupted (length {bytes.Length})");
            }

            if (++received == Senders * PerSender)
            {
                allReceived.TrySetResult();
            }

            return default;
        });

        Task[] senders = Enumerable.Range(0, Senders).Select(sender => Task.Run(async () =>
        {
            for (int seq = 0; seq < PerSender; seq++)
            {
                byte[] payload = MakePayload(sender, seq, Math.Max(8, sizes[seq % sizes.Length]));
                ulong epoch = (ulong)(sender * 1_000_000 + seq);
                if (seq % 2 == 0)
                {
                    await client.SendAsync(MessageType.SvmFrame, epoch, payload);
                }
                else
                {
                    int split = seq % payload.Length;
                    await client.SendAsync(MessageType.SvmFrame, epoch, payload.AsMemory(0, split), payload.AsMemory(split));
                }
            }
        })).ToArray();

        await Task.WhenAll(senders).Within(60);
        await allReceived.Task.Within(60);

        Assert.Empty(errors);
        Assert.All(nextSeq, n => Assert.Equal(PerSender, n));
        Assert.Equal(Senders * PerSender, client.MessagesSent);
        Assert.Equal(client.MessagesSent, server.MessagesReceived);
        Assert.Equal(client.BytesSent, server.BytesReceived);
        Assert.Null(server.CloseReason);
        Assert.False(loop.IsCompleted);
    }

    private static byte[] MakePayload(int sender, int seq, int length)
    {
        var bytes = new byte[length];
        BinaryPrimitives.WriteInt32BigEndian(bytes, sender);
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(4), seq);
        for (int i = 8; i < length; i++)
        {
            bytes[i] = (byte)((sender * 31) + seq + i);
        }

        return bytes;
    }

    private static bool HasPattern(byte[] bytes, int sender, int seq)
    {
        for (int i = 8; i < bytes.Length; i++)
        {
            if (bytes[i] != (byte)((sender * 31) + seq + i))
            {
                return false;
            }
        }

        return true;
    }

    [Fact]
    public async Task Receive_PeerClosesMidMessage_ClosesAsTruncated()
    {
        (Socket raw, LinkConnection server) = await LinkPair.ConnectRawClientAsync(_logger);
        await using LinkConnection s = server;
        var delivered = new List<MessageType>();
        Task loop = server.RunReceiveLoopAsync((type, _, _) =>
        {
            delivered.Add(type);
            return default;
        });

        byte[] whole = LinkPair.Frame(MessageType.Heartbeat, 1, []);
        byte[] cut = LinkPair.Frame(MessageType.ClientFrame, 1, new byte[100]).AsSpan(0, LinkFraming.HeaderSize + 50).ToArray();
        await raw.SendAsync(whole.Concat(cut).ToArray());
        raw.Shutdown(SocketShutdown.Send);

        await loop.Within();
        raw.Dispose();

        Assert.StartsWith("truncated", server.CloseReason);
        Assert.True(server.Closed.IsCompleted);
        Assert.Equal([MessageType.Heartbeat], delivered);
    }

    [Fact]
    public async Task Receive_PeerClosesBetweenMessages_ClosesAsPeerClosed()
    {
        (Socket raw, LinkConnection server) = await LinkPair.ConnectRawClientAsync(_logger);
        await using LinkConnection s = server;
        Task loop = server.RunReceiveLoopAsync(Ignore);

        await raw.SendAsync(LinkPair.Frame(MessageType.Heartbeat, 1, []));
        raw.Shutdown(SocketShutdown.Send);
        await loop.Within();
        raw.Dispose();

        Assert.Equal("peer closed the connection", server.CloseReason);
        Assert.Equal(1, server.MessagesReceived);
    }

    [Theory]
    [InlineData("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "magic")]
    [InlineData("\u00C0\u001A\u0002\u0002\0\0\0\0\0\0\0\0\0\0\0\0", "version")]
    [InlineData("\u00C0\u001A\u0001\u0063\0\0\0\0\0\0\0\0\0\0\0\0", "type")]
    [InlineData("\u00C0\u001A\u0001\u0006\u0001\u0000\u0000\u0001\0\0\0\0\0\0\0\0", "exceeds")]
    public async Task Receive_Garbage_ClosesAsProtocolViolation(string garbage, string expected)
    {
        (Socket raw, LinkConnection server) = await LinkPair.ConnectRawClientAsync(_logger);
        using Socket r = raw;
        await using LinkConnection s = server;
        Task loop = server.RunReceiveLoopAsync(Ignore);

        await raw.SendAsync(Encoding.Latin1.GetBytes(garbage));
        await loop.Within();

        Assert.StartsWith("protocol violation", server.CloseReason);
        Assert.Contains(expected, server.CloseReason);
        Assert.Equal(0, server.MessagesReceived);
    }

    [Fact]
    public async Task Send_FrozenPeer_TimesOutWithLinkClosedException()
    {
        var timeout = TimeSpan.FromSeconds(1);
        using var frozen = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        frozen.ReceiveBufferSize = 4096;
        frozen.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        frozen.Listen(1);
        Task<Socket> accept = frozen.AcceptAsync();
        await using LinkConnection client = await LinkConnection.ConnectAsync((IPEndPoint)frozen.LocalEndPoint!, LinkPair.SetupTimeout, _logger);
        using Socket neverRead = await accept;
        client.SendTimeout = timeout;

        byte[] payload = new byte[1024 * 1024];
        LinkClosedException? failure = null;
        TimeSpan failedAfter = default;
        Task? queued = null;
        for (int i = 0; i < 500 && failure is null; i++)
        {
            long start = Stopwatch.GetTimestamp();
            ValueTask send = client.SendAsync(MessageType.CheckpointPages, 1, payload);

            // A second sender queued behind a blocked send; behind the stuck one it must fail too rather than hang.
            queued = send.IsCompleted ? null : client.SendAsync(MessageType.Heartbeat, 1, ReadOnlyMemory<byte>.Empty).AsTask();
            try
            {
                await send.AsTask().Within(30);
            }
            catch (LinkClosedException ex)
            {
                failure = ex;
                failedAfter = Stopwatch.GetElapsedTime(start);
            }

            if (failure is null && queued is not null)
            {
                await queued.Within(30); // the blocked send got through after all: so does the one behind it
            }
        }

        Assert.NotNull(failure);
        output.WriteLine($"send failed after {failedAfter.TotalMilliseconds:F0} ms, {client.MessagesSent} messages sent before");
        Assert.InRange(failedAfter, timeout * 0.9, timeout + TimeSpan.FromSeconds(1.5));
        Assert.Contains("timed out", failure.Reason);
        Assert.Equal(failure.Reason, client.CloseReason);
        Assert.True(client.Closed.IsCompleted);
        Assert.NotNull(queued);
        await Assert.ThrowsAsync<LinkClosedException>(() => queued).Within();
        await Assert.ThrowsAsync<LinkClosedException>(() => client.SendAsync(MessageType.Heartbeat, 1, ReadOnlyMemory<byte>.Empty).AsTask());
    }

    [Fact]
    public async Task Send_MaximumPayload_ArrivesIntact()
    {
        (LinkConnection client, LinkConnection server) = await LinkPair.ConnectAsync(_logger);
        await using LinkConnection c = client;
        await using LinkConnection s = server;
        byte[] payload = new byte[LinkFraming.MaxPayloadLength];
        new Random(7).NextBytes(payload);
        byte[] expected = SHA256.HashData(payload);

        var hashes = new List<(ulong Epoch, long Length, byte[] Hash)>();
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _ = server.RunReceiveLoopAsync((_, epoch, data) =>
        {
            using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            foreach (ReadOnlyMemory<byte> segment in data)
            {
                sha.AppendData(segment.Span);
            }

            hashes.Add((epoch, data.Length, sha.GetHashAndReset()));
            if (hashes.Count == 2)
            {
                done.TrySetResult();
            }

            return default;
        });

        await client.SendAsync(MessageType.CheckpointPages, 1, payload).AsTask().Within(30);
        await client.SendAsync(MessageType.CheckpointPages, 2, payload.AsMemory(0, 5_000_000), payload.AsMemory(5_000_000)).AsTask().Within(30);
        await done.Task.Within(30);

        Assert.All(hashes, h => Assert.Equal(LinkFraming.MaxPayloadLength, h.Length));
        Assert.All(hashes, h => Assert.Equal(expected, h.Hash));
        Assert.Equal([1UL, 2UL], hashes.Select(h => h.Epoch));
    }

    [Fact]
    public async Task Send_OversizedPayloadOrUnknownType_ThrowsAndLinkStaysOpen()
    {
        (LinkConnection client, LinkConnection server) = await LinkPair.ConnectAsync(_logger);
        await using LinkConnection c = client;
        await using LinkConnection s = server;
        byte[] half = new byte[(LinkFraming.MaxPayloadLength / 2) + 1];

        Assert.Throws<ArgumentOutOfRangeException>(() => client.SendAsync(MessageType.CheckpointPages, 1, new byte[LinkFraming.MaxPayloadLength + 1]));
        Assert.Throws<ArgumentOutOfRangeException>(() => client.SendAsync(MessageType.CheckpointPages, 1, half, half));
        Assert.Throws<ArgumentOutOfRangeException>(() => client.SendAsync((MessageType)77, 1, ReadOnlyMemory<byte>.Empty));

        Assert.False(client.IsClosed);
        await client.SendAsync(MessageType.Heartbeat, 1, ReadOnlyMemory<byte>.Empty);
    }

    [Fact]
    public async Task Hello_ExchangedAndDecoded()
    {
        (LinkConnection client, LinkConnection server) = await LinkPair.ConnectAsync(_logger);
        await using LinkConnection c = client;
        await using LinkConnection s = server;
        var got = new TaskCompletionSource<LinkHello>(TaskCreationOptions.RunContinuationsAsynchronously);
        _ = server.RunReceiveLoopAsync((type, _, payload) =>
        {
            got.TrySetResult(LinkHello.Decode(payload));
            return default;
        });

        var hello = new LinkHello("primary", "vm1", 256 << 20, "abc123");
        await client.SendAsync(MessageType.Hello, 0, LinkHello.Encode(hello));

        Assert.Equal(hello, await got.Task.Within());
    }

    [Fact]
    public async Task Hello_Undecodable_ClosesAsProtocolViolation()
    {
        (LinkConnection client, LinkConnection server) = await LinkPair.ConnectAsync(_logger);
        await using LinkConnection c = client;
        await using LinkConnection s = server;
        Task loop = server.RunReceiveLoopAsync((type, _, payload) =>
        {
            LinkHello.Decode(payload);
            return default;
        });

        Task clientLoop = client.RunReceiveLoopAsync(Ignore);
        await client.SendAsync(MessageType.Hello, 0, "{oops"u8.ToArray());
        await loop.Within();

        Assert.StartsWith("protocol violation: undecodable hello", server.CloseReason);
        await clientLoop.Within(); // the violating peer sees the link go down too
        Assert.NotNull(client.CloseReason);
    }

    [Fact]
    public async Task Goodbye_DeliveredThenLinkCloses()
    {
        (LinkConnection client, LinkConnection server) = await LinkPair.ConnectAsync(_logger);
        await using LinkConnection c = client;
        await using LinkConnection s = server;
        var seen = new List<MessageType>();
        Task loop = server.RunReceiveLoopAsync((type, _, _) =>
        {
            seen.Add(type);
            return default;
        });

        await client.SendAsync(MessageType.Heartbeat, 3, ReadOnlyMemory<byte>.Empty);
        await client.SendGoodbyeAsync("operator stop", 3);
        await loop.Within();

        Assert.Equal([MessageType.Heartbeat, MessageType.Goodbye], seen);
        Assert.Equal("peer said goodbye: operator stop", server.CloseReason);
    }

    [Fact]
    public async Task Close_IsIdempotentAndKeepsFirstReason()
    {
        (LinkConnection client, LinkConnection server) = await LinkPair.ConnectAsync(_logger);
        await using LinkConnection s = server;
        Task serverLoop = server.RunReceiveLoopAsync(Ignore);

        client.Close("first");
        client.Close("second");
        await client.DisposeAsync();

        Assert.Equal("first", client.CloseReason);
        Assert.True(client.Closed.IsCompletedSuccessfully);
        var ex = await Assert.ThrowsAsync<LinkClosedException>(() => client.SendAsync(MessageType.Heartbeat, 0, ReadOnlyMemory<byte>.Empty).AsTask());
        Assert.Equal("first", ex.Reason);
        await serverLoop.Within();
        Assert.Equal("peer closed the connection", server.CloseReason);
    }

    [Fact]
    public async Task ReceiveLoop_Cancelled_ClosesLink()
    {
        (LinkConnection client, LinkConnection server) = await LinkPair.ConnectAsync(_logger);
        await using LinkConnection c = client;
        await using LinkConnection s = server;
        using var cts = new CancellationTokenSource();
        Task loop = server.RunReceiveLoopAsync(Ignore, cts.Token);

        cts.Cancel();
        await loop.Within();

        Assert.Equal("receive loop cancelled", server.CloseReason);
        Assert.Throws<InvalidOperationException>(() => { _ = server.RunReceiveLoopAsync(Ignore); });
    }

    [Fact]
    public async Task ReceiveLoop_HandlerThrows_ClosesLinkAndFaults()
    {
        (LinkConnection client, LinkConnection server) = await LinkPair.ConnectAsync(_logger);
        await using LinkConnection c = client;
        await using LinkConnection s = server;
        Task loop = server.RunReceiveLoopAsync((_, _, _) => throw new InvalidDataException("boom"));

        await client.SendAsync(MessageType.Heartbeat, 0, ReadOnlyMemory<byte>.Empty);

        await Assert.ThrowsAsync<InvalidDataException>(() => loop.Within());
        Assert.StartsWith("message handler failed on Heartbeat: boom", server.CloseReason);
    }

    [Fact]
    public async Task Counters_CountMessagesAndBytesBothWays()
    {
        (LinkConnection client, LinkConnection server) = await LinkPair.ConnectAsync(_logger);
        await using LinkConnection c = client;
        await using LinkConnection s = server;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _ = server.RunReceiveLoopAsync((_, epoch, _) =>
        {
            if (epoch == 9)
            {
                done.TrySetResult();
            }

            return default;
        });

        for (int i = 0; i < 10; i++)
        {
            await client.SendAsync(MessageType.ClientFrame, (ulong)i, new byte[i * 10]);
        }

        await done.Task.Within();
        Assert.Equal(10, client.MessagesSent);
        Assert.Equal((10 * LinkFraming.HeaderSize) + 450, client.BytesSent);
        Assert.Equal(10, server.MessagesReceived);
        Assert.Equal(client.BytesSent, server.BytesReceived);
        Assert.Equal(0, server.MessagesSent);
    }

    [Fact]
    public async Task Connect_NothingListening_ThrowsTimeoutAfterTimeout()
    {
        int port = FreePort();
        long start = Stopwatch.GetTimestamp();

        var ex = await Assert.ThrowsAsync<TimeoutException>(
            () => LinkConnection.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), TimeSpan.FromMilliseconds(500), _logger));

        TimeSpan elapsed = Stopwatch.GetElapsedTime(start);
        Assert.InRange(elapsed, TimeSpan.FromMilliseconds(450), TimeSpan.FromSeconds(3));
        Assert.IsType<SocketException>(ex.InnerException);
    }

    [Fact]
    public async Task Connect_ListenerStartsLater_RetriesAndConnects()
    {
        int port = FreePort();
        var endPoint = new IPEndPoint(IPAddress.Loopback, port);
        Task<LinkConnection> connect = LinkConnection.ConnectAsync(endPoint, TimeSpan.FromSeconds(10), _logger);
        await Task.Delay(300);
        Assert.False(connect.IsCompleted);

        using LinkListener listener = new LinkListener(endPoint, _logger);
        await using LinkConnection server = await listener.AcceptAsync(TimeSpan.FromSeconds(10));
        await using LinkConnection client = await connect.Within();

        Assert.Equal(client.LocalEndPoint, server.RemoteEndPoint);
    }

    [Fact]
    public async Task Accept_NoClient_ThrowsTimeout()
    {
        using LinkListener listener = new LinkListener(new IPEndPoint(IPAddress.Loopback, 0), _logger);
        await Assert.ThrowsAsync<TimeoutException>(() => listener.AcceptAsync(TimeSpan.FromMilliseconds(200)));
    }

    private static int FreePort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }
}
