using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace Colo.Link.Tests.Support;

internal static class LinkPair
{
    public static readonly TimeSpan SetupTimeout = TimeSpan.FromSeconds(10);

    /// <summary>Connects a client link to a server link over loopback.</summary>
    public static async Task<(LinkConnection Client, LinkConnection Server)> ConnectAsync(ILogger logger)
    {
        using LinkListener listener = new LinkListener(new IPEndPoint(IPAddress.Loopback, 0), logger);
        Task<LinkConnection> accept = listener.AcceptAsync(SetupTimeout);
        LinkConnection client = await LinkConnection.ConnectAsync(listener.LocalEndPoint, SetupTimeout, logger);
        return (client, await accept);
    }

    /// <summary>A server link whose peer is a raw socket (for feeding it arbitrary bytes).</summary>
    public static async Task<(Socket Raw, LinkConnection Server)> ConnectRawClientAsync(ILogger logger)
    {
        using LinkListener listener = new LinkListener(new IPEndPoint(IPAddress.Loopback, 0), logger);
        Task<LinkConnection> accept = listener.AcceptAsync(SetupTimeout);
        var raw = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await raw.ConnectAsync(listener.LocalEndPoint);
        return (raw, await accept);
    }

    public static byte[] Frame(MessageType type, ulong epoch, ReadOnlySpan<byte> payload)
    {
        var bytes = new byte[LinkFraming.HeaderSize + payload.Length];
        LinkFraming.WriteHeader(bytes, type, epoch, payload.Length);
        payload.CopyTo(bytes.AsSpan(LinkFraming.HeaderSize));
        return bytes;
    }

    /// <summary>Waits for <paramref name="task"/> or fails after <paramref name="seconds"/>.</summary>
    public static async Task<T> Within<T>(this Task<T> task, double seconds = 10)
    {
        Task done = await Task.WhenAny(task, Task.Delay(TimeSpan.FromSeconds(seconds)));
        Assert.True(done == task, $"Timed out after {seconds} s");
        return await task;
    }

    /// <summary>Waits for <paramref name="task"/> or fails after <paramref name="seconds"/>.</summary>
    public static async Task Within(this Task task, double seconds = 10)
    {
        Task done = await Task.WhenAny(task, Task.Delay(TimeSpan.FromSeconds(seconds)));
        Assert.True(done == task, $"Timed out after {seconds} s");
        await task;
    }
}
