using System.Buffers.Binary;
using System.Text;
using Colo.Nbd.Tests.Support;
using Xunit.Abstractions;
using static Colo.Nbd.Tests.Support.NbdTestClient;

namespace Colo.Nbd.Tests;

public sealed class HandshakeTests(ITestOutputHelper output)
{
    private const long Size = 1024 * 1024;

    [Fact]
    public async Task Greeting_AdvertisesFixedNewstyleAndNoZeroes()
    {
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output);
        await using NbdTestClient c = await NbdTestClient.ConnectAsync(h.SocketPath);
        Assert.Equal(3, await c.ReadGreetingAsync());
    }

    [Fact]
    public async Task Go_KnownExport_SendsSizeFlagsBlockSizesThenEntersTransmission()
    {
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output);
        await using NbdTestClient c = await NbdTestClient.ConnectAsync(h.SocketPath);
        await c.ReadGreetingAsync();
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(OptGo, InfoData("disk0", InfoBlockSize, InfoName));

        var infos = new Dictionary<ushort, byte[]>();
        while (true)
        {
            (uint option, uint type, byte[] data) = await c.ReadOptionReplyAsync();
            Assert.Equal(OptGo, option);
            if (type == RepAck)
            {
                break;
            }

            Assert.Equal(RepInfo, type);
            infos[BinaryPrimitives.ReadUInt16BigEndian(data)] = data[2..];
        }

        Assert.Equal((ulong)Size, BinaryPrimitives.ReadUInt64BigEndian(infos[InfoExport]));
        ushort flags = BinaryPrimitives.ReadUInt16BigEndian(infos[InfoExport].AsSpan(8));
        Assert.Equal(TfHasFlags | TfSendFlush | TfSendFua | TfSendTrim | TfSendWriteZeroes | TfCanMultiConn, flags);
        Assert.Equal("disk0", Encoding.UTF8.GetString(infos[InfoName]));
        byte[] sizes = infos[InfoBlockSize];
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32BigEndian(sizes));
        Assert.Equal(4096u, BinaryPrimitives.ReadUInt32BigEndian(sizes.AsSpan(4)));
        Assert.Equal(32u * 1024 * 1024, BinaryPrimitives.ReadUInt32BigEndian(sizes.AsSpan(8)));

        // In transmission now: a read works.
        (uint error, byte[] block) = await c.ReadBlockAsync(0, 512);
        Assert.Equal(0u, error);
        Assert.Equal(new byte[512], block);
    }

    [Fact]
    public async Task Go_EmptyName_SelectsTheDefaultExport()
    {
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output);
        (NbdTestClient c, ulong size, _) = await NbdTestClient.ConnectAndGoAsync(h.SocketPath, "");
        await using (c)
        {
            Assert.Equal((ulong)Size, size);
        }
    }

    [Fact]
    public async Task Go_UnknownExport_ErrUnknown_ThenGoOnTheRightNameWorks()
    {
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output);
        await using NbdTestClient c = await NbdTestClient.ConnectAsync(h.SocketPath);
        await c.ReadGreetingAsync();
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(OptGo, InfoData("nope"));
        (uint option, uint type, byte[] message) = await c.ReadOptionReplyAsync();
        Assert.Equal(OptGo, option);
        Assert.Equal(RepErrUnknown, type);
        Assert.Contains("nope", Encoding.UTF8.GetString(message), StringComparison.Ordinal);

        (ulong size, _) = await c.GoAsync("disk0");
        Assert.Equal((ulong)Size, size);
    }

    [Fact]
    public async Task Info_ReportsTheExportAndStaysInHaggling()
    {
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output);
        await using NbdTestClient c = await NbdTestClient.ConnectAsync(h.SocketPath);
        await c.ReadGreetingAsync();
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(OptInfo, InfoData("disk0"));
        var types = new List<ushort>();
        while (true)
        {
            (uint option, uint type, byte[] data) = await c.ReadOptionReplyAsync();
            Assert.Equal(OptInfo, option);
            if (type == RepAck)
            {
                break;
            }

            Assert.Equal(RepInfo, type);
            types.Add(BinaryPrimitives.ReadUInt16BigEndian(data));
            if (types[^1] == InfoExport)
            {
                Assert.Equal((ulong)Size, BinaryPrimitives.ReadUInt64BigEndian(data.AsSpan(2)));
            }
        }

        Assert.Contains(InfoExport, types);
        (ulong size, _) = await c.GoAsync("disk0"); // still haggling: GO works
        Assert.Equal((ulong)Size, size);
    }

    [Theory]
    [InlineData(new byte[] { 0, 0, 0 })] // shorter than the fixed part
    [InlineData(new byte[] { 0, 0, 0, 9, (byte)'a', 0, 0 })] // name length beyond the data
    [InlineData(new byte[] { 0, 0, 0, 1, (byte)'a', 0, 2, 0, 3 })] // two info requests announced, one sent
    public async Task Go_InconsistentLengths_ErrInvalid_ConnectionStaysUsable(byte[] data)
    {
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output);
        await using NbdTestClient c = await NbdTestClient.ConnectAsync(h.SocketPath);
        await c.ReadGreetingAsync();
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(OptGo, data);
        Assert.Equal(RepErrInvalid, (await c.ReadOptionReplyAsync()).Type);
        await c.GoAsync("disk0");
    }

    [Fact]
    public async Task List_ReturnsTheExportThenAck()
    {
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output, export: "ümlaut-disk");
        await using NbdTestClient c = await NbdTestClient.ConnectAsync(h.SocketPath);
        await c.ReadGreetingAsync();
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(OptList, []);
        (uint option, uint type, byte[] data) = await c.ReadOptionReplyAsync();
        Assert.Equal((OptList, RepServer), (option, type));
        uint length = BinaryPrimitives.ReadUInt32BigEndian(data);
        Assert.Equal("ümlaut-disk", Encoding.UTF8.GetString(data, 4, (int)length));
        Assert.Equal(RepAck, (await c.ReadOptionReplyAsync()).Type);
    }

    [Fact]
    public async Task List_WithData_ErrInvalid()
    {
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output);
        await using NbdTestClient c = await NbdTestClient.ConnectAsync(h.SocketPath);
        await c.ReadGreetingAsync();
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(OptList, [1, 2, 3]);
        Assert.Equal(RepErrInvalid, (await c.ReadOptionReplyAsync()).Type);
        await c.GoAsync("disk0");
    }

    [Fact]
    public async Task Abort_AcksAndCloses()
    {
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output);
        await using NbdTestClient c = await NbdTestClient.ConnectAsync(h.SocketPath);
        await c.ReadGreetingAsync();
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(OptAbort, []);
        (uint option, uint type, _) = await c.ReadOptionReplyAsync();
        Assert.Equal((OptAbort, RepAck), (option, type));
        Assert.True(await c.WaitClosedAsync());
    }

    [Theory]
    [InlineData(OptStructuredReply)]
    [InlineData(OptStartTls)]
    [InlineData(10u)] // SET_META_CONTEXT
    [InlineData(0xdead_beefu)]
    public async Task UnknownOrUnsupportedOption_ErrUnsup_ThenGoWorks(uint option)
    {
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output);
        await using NbdTestClient c = await NbdTestClient.ConnectAsync(h.SocketPath);
        await c.ReadGreetingAsync();
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(option, [1, 2, 3, 4, 5]);
        (uint replyOption, uint type, _) = await c.ReadOptionReplyAsync();
        Assert.Equal((option, RepErrUnsup), (replyOption, type));
        await c.GoAsync("disk0");
    }

    [Theory]
    [InlineData(3u, 10)] // NO_ZEROES negotiated: size and flags only
    [InlineData(1u, 134)] // without: 124 zero bytes follow
    public async Task ExportName_Known_SendsSizeAndFlags(uint clientFlags, int replyLength)
    {
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output);
        await using NbdTestClient c = await NbdTestClient.ConnectAsync(h.SocketPath);
        await c.ReadGreetingAsync();
        await c.SendClientFlagsAsync(clientFlags);
        await c.SendOptionAsync(OptExportName, Encoding.UTF8.GetBytes("disk0"));
        byte[] reply = await c.ReadExactAsync(replyLength);
        Assert.Equal((ulong)Size, BinaryPrimitives.ReadUInt64BigEndian(reply));
        Assert.Equal(TfHasFlags | TfSendFlush | TfSendFua | TfSendTrim | TfSendWriteZeroes | TfCanMultiConn, BinaryPrimitives.ReadUInt16BigEndian(reply.AsSpan(8)));
        Assert.All(reply[10..], b => Assert.Equal(0, b));

        // Transmission follows directly (nothing else was sent: the first bytes now are a reply).
        Assert.Equal(0u, await c.CommandAsync(CmdFlush, 0, 0));
    }

    [Fact]
    public async Task ExportName_Unknown_ClosesTheConnection()
    {
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output);
        await using NbdTestClient c = await NbdTestClient.ConnectAsync(h.SocketPath);
        await c.ReadGreetingAsync();
        await c.SendClientFlagsAsync(3);
        await c.SendOptionAsync(OptExportName, Encoding.UTF8.GetBytes("nope"));
        Assert.True(await c.WaitClosedAsync());
    }

    [Fact]
    public async Task UnknownClientFlags_CloseTheConnection()
    {
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output);
        await using NbdTestClient c = await NbdTestClient.ConnectAsync(h.SocketPath);
        await c.ReadGreetingAsync();
        await c.SendClientFlagsAsync(0x10);
        Assert.True(await c.WaitClosedAsync());
    }

    [Fact]
    public async Task BadOptionMagic_ClosesOnlyThatConnection()
    {
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output);
        (NbdTestClient good, _, _) = await h.ConnectAndGoAsync();
        await using (good)
        {
            await using NbdTestClient bad = await NbdTestClient.ConnectAsync(h.SocketPath);
            await bad.ReadGreetingAsync();
            await bad.SendClientFlagsAsync(3);
            await bad.SendOptionAsync(OptGo, InfoData("disk0"), magic: 0x1122334455667788);
            Assert.True(await bad.WaitClosedAsync());

            // The established connection and the listener both keep working.
            Assert.Equal(0u, await good.CommandAsync(CmdWrite, 0, 4, payload: [1, 2, 3, 4]));
            (NbdTestClient again, _, _) = await h.ConnectAndGoAsync();
            await using (again)
            {
                (uint error, byte[] data) = await again.ReadBlockAsync(0, 4);
                Assert.Equal(0u, error);
                Assert.Equal([1, 2, 3, 4], data);
            }
        }
    }

    [Fact]
    public async Task OversizedOptionLength_ClosesOnlyThatConnection()
    {
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output);
        await using NbdTestClient bad = await NbdTestClient.ConnectAsync(h.SocketPath);
        await bad.ReadGreetingAsync();
        await bad.SendClientFlagsAsync(3);
        await bad.SendOptionAsync(OptGo, [], length: 0x7fff_0000);
        Assert.True(await bad.WaitClosedAsync());

        (NbdTestClient again, ulong size, _) = await h.ConnectAndGoAsync();
        await using (again)
        {
            Assert.Equal((ulong)Size, size);
        }
    }

    [Fact]
    public async Task GarbageInsteadOfHandshake_ClosesOnlyThatConnection()
    {
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output);
        await using NbdTestClient bad = await NbdTestClient.ConnectAsync(h.SocketPath);
        await bad.WriteAsync(Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        Assert.True(await bad.WaitClosedAsync());
        (NbdTestClient again, _, _) = await h.ConnectAndGoAsync();
        await again.DisposeAsync();
    }

    [Fact]
    public async Task SilentClient_ClosedAfterTheHandshakeTimeout()
    {
        var options = new NbdServerOptions { HandshakeTimeout = TimeSpan.FromMilliseconds(300) };
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output, options: options);
        await using NbdTestClient c = await NbdTestClient.ConnectAsync(h.SocketPath);
        await c.ReadGreetingAsync();
        Assert.True(await c.WaitClosedAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task ClientVanishingMidHandshake_DoesNotDisturbTheServer()
    {
        await using var h = new ServerHarness(new MemoryBlockDevice(Size), output);
        for (int i = 0; i < 5; i++)
        {
            NbdTestClient c = await NbdTestClient.ConnectAsync(h.SocketPath);
            await c.ReadGreetingAsync();
            await c.WriteAsync([0, 0]); // half of the client flags
            await c.DisposeAsync();
        }

        (NbdTestClient again, _, _) = await h.ConnectAndGoAsync();
        await again.DisposeAsync();
    }

    [Fact]
    public async Task ReadOnlyDevice_AdvertisesReadOnlyWithoutWriteFeatures()
    {
        await using var h = new ServerHarness(new MemoryBlockDevice(Size, readOnly: true), output);
        (NbdTestClient c, _, ushort flags) = await h.ConnectAndGoAsync();
        await using (c)
        {
            Assert.Equal(TfHasFlags | TfReadOnly | TfSendFlush | TfCanMultiConn, flags);
        }
    }
}
